"""tenant-quota (Python): counts calls per tenant (the `x-tenant` metadata entry) in host
counters shared by every instance, and answers RESOURCE_EXHAUSTED once a tenant has used its
quota; calls without a tenant get INVALID_ARGUMENT. The same plugin as the Rust example.

    - wasm: { name: tenant-quota, path: plugins/build/tenant_quota_py.wasm,
              config: { header: x-tenant, quota: 1000, quotas: { big-customer: 100000 } } }
"""

from synapsor_plugin import Code, Plugin, Reject, counter_add, export, settings


class TenantQuota(Plugin):
    def __init__(self, config):
        self.c = settings(config, header="x-tenant", quota=1000, quotas={})

    def on_request(self, req):
        tenant = req.header(self.c.header)
        if tenant is None:
            raise Reject(Code.INVALID_ARGUMENT, f"missing {self.c.header}")
        quota = self.c.quotas.get(tenant, self.c.quota)
        used = counter_add(f"calls:{tenant}", 1)
        if used > quota:
            raise Reject(Code.RESOURCE_EXHAUSTED, f"tenant {tenant} used its quota of {quota} calls",
                         {"x-quota-limit": str(quota)})
        return None


WitWorld = export(TenantQuota)
