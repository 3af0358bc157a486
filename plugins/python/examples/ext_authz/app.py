"""ext-authz (Python): asks an external authorization service about every call, as Envoy's
`ext_authz` filter does, and caches its decisions in the plugin's shared state; the same
plugin as the Rust example (plugins/examples/ext-authz), same config and metric.

It sends `CheckRequest { method = 1, principal = 2, repeated Header headers = 3 }` to
`method` on the upstream group `group`. OK lets the call through with the `CheckResponse`'s
headers set on it; another status ends the call with that status and message. Both are kept
for `cache_ttl_ms`. When the service cannot be asked, `on_error` decides: `deny` ends the
call with UNAVAILABLE `authorization service unavailable (<kind>)`, `allow` lets it through.

    - wasm:
        name: authz
        path: plugins/build/ext_authz_py.wasm
        callouts: { groups: [authz], timeout: 200ms }
        config: { group: authz, method: /synapsor.test.v1.Authz/Check,
                  headers: [authorization], cache_ttl_ms: 5000, on_error: deny }
"""

import logging

from synapsor_plugin import Code, Plugin, Reject, callout, export, metrics, settings, state

import decision

log = logging.getLogger("ext-authz")


class ExtAuthz(Plugin):
    def __init__(self, config):
        c = settings(config, group="authz", method="/synapsor.test.v1.Authz/Check",
                     headers=["authorization"], cache_ttl_ms=5000, on_error="deny")
        if not c.group:
            raise ValueError("group must name an upstream group")
        if not c.method.startswith("/"):
            raise ValueError("method must be a path: /package.Service/Method")
        if c.on_error not in ("deny", "allow"):
            raise ValueError(f"on_error must be deny or allow, not {c.on_error!r}")
        c.headers = [h.lower() for h in c.headers]
        self.c = c
        self.decisions = metrics.Counter(
            "ext_authz_decisions", "Authorization decisions, by result and whether the cache answered",
            ["result", "cache"])

    def on_request(self, req):
        headers = [(n, v) for n in self.c.headers for v in req.headers(n)]
        key = decision.cache_key(req.method, req.principal, headers) if self.c.cache_ttl_ms > 0 else None
        d = cached(key) if key else None
        if d is not None:
            self.decisions.inc([d.result(), "hit"])
            return d.action()
        try:
            d = self.ask(req.method, req.principal, headers)
        except callout.CalloutError as e:
            self.decisions.inc(["error", "miss"])
            # The detail (addresses, OS errors) goes to the gateway's log, not to clients.
            log.warning("authorization service: %s", e)
            if self.c.on_error == "deny":
                raise Reject(Code.UNAVAILABLE, f"authorization service unavailable ({e.kind})")
            return None
        if key:
            remember(key, d, self.c.cache_ttl_ms)
        self.decisions.inc([d.result(), "miss"])
        return d.action()

    def ask(self, method, principal, headers):
        """The service's decision; raises CalloutError when it could not be asked."""
        message = decision.check_request(method, principal, headers)
        try:
            answer = callout.call(self.c.group, self.c.method, message)
        except callout.CalloutError as e:
            if e.kind == "status":
                return decision.Decision.deny(e.to_reject().code, e.message)
            raise
        try:
            return decision.Decision.allow(decision.check_response(answer.message))
        except ValueError as e:
            raise callout.CalloutError("invalid", f"malformed CheckResponse: {e}") from None


def cached(key):
    """The decision cached under `key`, if any (a state error counts as none)."""
    try:
        value = state.get(key)
    except state.StateError as e:
        log.debug("decision cache not read: %s", e)
        return None
    return decision.Decision.decode(value) if value is not None else None


def remember(key, d, ttl_ms):
    """Keeps `d` for `ttl_ms`; a state error is logged and otherwise ignored."""
    try:
        state.set(key, d.encode(), ttl_ms)
    except state.StateError as e:
        log.debug("decision not cached: %s", e)


WitWorld = export(ExtAuthz)
