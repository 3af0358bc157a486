/**
 * tenant-quota (JavaScript): counts calls per tenant (the `x-tenant` metadata entry) in host
 * counters shared by every instance, and answers RESOURCE_EXHAUSTED once a tenant has used its
 * quota; calls without a tenant get INVALID_ARGUMENT. The same plugin as the Rust example.
 *
 *     - wasm: { name: tenant-quota, path: plugins/build/tenant_quota_js.wasm,
 *               config: { header: x-tenant, quota: 1000, quotas: { big-customer: 100000 } } }
 */

import { Code, Plugin, Reject, counterAdd, serve, settings } from 'synapsor-plugin';

class TenantQuota extends Plugin {
    constructor(config) {
        super(config);
        this.c = settings(config, { header: 'x-tenant', quota: 1000, quotas: {} });
    }

    onRequest(req) {
        const tenant = req.header(this.c.header);
        if (tenant === undefined) {
            throw new Reject(Code.INVALID_ARGUMENT, `missing ${this.c.header}`);
        }
        const quota = Object.hasOwn(this.c.quotas, tenant) ? this.c.quotas[tenant] : this.c.quota;
        const used = counterAdd(`calls:${tenant}`, 1);
        if (used > quota) {
            throw new Reject(Code.RESOURCE_EXHAUSTED, `tenant ${tenant} used its quota of ${quota} calls`,
                { 'x-quota-limit': String(quota) });
        }
        return undefined;
    }
}

export const { init, onRequest, onResponse, onRequestMessage, onResponseMessage } = serve(TenantQuota);
