// method-deny: an interceptor plugin in C, to show the contract is language-neutral.
//
// It refuses (PERMISSION_DENIED) every call whose method starts with the configured prefix,
// and tags every other call with `x-c-plugin: <n>`, n counted with the host's `counter-add`.
//
//   - wasm: { name: method-deny, path: plugins/build/method_deny.wasm,
//             config: { deny_prefix: "/admin." } }
//
// Build: see build.sh (wit-bindgen c, clang --target=wasm32-wasi, wasm-tools component new).

#include <stdlib.h>
#include <string.h>

#include "interceptor.h"

static char *deny_prefix = NULL;

// Finds the string value of "key" in a flat JSON object: enough for this plugin's config.
static char *json_string(const char *json, size_t len, const char *key) {
    char pattern[64];
    size_t klen = strlen(key);
    if (klen + 3 > sizeof pattern) {
        return NULL;
    }
    pattern[0] = '"';
    memcpy(pattern + 1, key, klen);
    pattern[klen + 1] = '"';
    pattern[klen + 2] = 0;
    char *copy = strndup(json, len);
    char *at = copy ? strstr(copy, pattern) : NULL;
    char *out = NULL;
    if (at) {
        char *open = strchr(at + strlen(pattern), '"');
        char *close = open ? strchr(open + 1, '"') : NULL;
        if (close) {
            out = strndup(open + 1, (size_t)(close - open - 1));
        }
    }
    free(copy);
    return out;
}

// Writes n in decimal (no stdio: it would pull in WASI imports this plugin does not need).
static void format_i64(int64_t n, char out[24]) {
    char digits[24];
    int len = 0;
    uint64_t u = n < 0 ? (uint64_t)(-(n + 1)) + 1 : (uint64_t)n;
    do {
        digits[len++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    int at = 0;
    if (n < 0) {
        out[at++] = '-';
    }
    while (len) {
        out[at++] = digits[--len];
    }
    out[at] = 0;
}

bool exports_interceptor_init(interceptor_string_t *config, interceptor_string_t *err) {
    deny_prefix = json_string((const char *)config->ptr, config->len, "deny_prefix");
    interceptor_string_free(config);
    if (!deny_prefix || !*deny_prefix) {
        interceptor_string_dup(err, "config.deny_prefix is required");
        return false;
    }
    return true;
}

void exports_interceptor_on_request(interceptor_request_info_t *info,
                                    interceptor_request_action_t *ret) {
    size_t n = strlen(deny_prefix);
    if (info->method.len >= n && memcmp(info->method.ptr, deny_prefix, n) == 0) {
        ret->tag = SYNAPSOR_PLUGIN_TYPES_REQUEST_ACTION_REJECT;
        ret->val.reject.code = 7; // PERMISSION_DENIED
        interceptor_string_dup(&ret->val.reject.message, "denied by method-deny (C)");
        ret->val.reject.trailers.ptr = NULL;
        ret->val.reject.trailers.len = 0;
    } else {
        interceptor_string_t key;
        interceptor_string_set(&key, "allowed");
        int64_t count = synapsor_plugin_host_counter_add(&key, 1);
        char value[24];
        format_i64(count, value);
        synapsor_plugin_types_header_op_t *op = malloc(sizeof *op);
        op->tag = SYNAPSOR_PLUGIN_TYPES_HEADER_OP_SET;
        interceptor_string_dup(&op->val.set.name, "x-c-plugin");
        interceptor_string_dup(&op->val.set.value, value);
        ret->tag = SYNAPSOR_PLUGIN_TYPES_REQUEST_ACTION_CONTINUE;
        ret->val.continue_.ptr = op;
        ret->val.continue_.len = 1;
    }
    interceptor_request_info_free(info);
}

void exports_interceptor_on_response(interceptor_response_info_t *info,
                                     interceptor_response_action_t *ret) {
    interceptor_response_info_free(info);
    ret->tag = SYNAPSOR_PLUGIN_TYPES_RESPONSE_ACTION_CONTINUE;
    ret->val.continue_.ptr = NULL;
    ret->val.continue_.len = 0;
}
