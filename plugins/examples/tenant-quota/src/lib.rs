//! `tenant-quota`: counts calls per tenant (the `x-tenant` metadata entry) in host counters
//! shared by every instance, and answers RESOURCE_EXHAUSTED once a tenant has used its quota.
//! Calls without a tenant are refused with INVALID_ARGUMENT.
//!
//! ```yaml
//! - wasm: { name: tenant-quota, path: plugins/build/tenant_quota.wasm,
//!           config: { header: x-tenant, quota: 1000, quotas: { big-customer: 100000 } } }
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use synapsor_plugin_sdk::{
    counter_add, export_plugin, parse_config, Code, Header, Plugin, Reject, RequestAction,
    RequestInfo,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// The metadata entry naming the tenant.
    header: String,
    /// Calls each tenant may make.
    quota: i64,
    /// Quotas of particular tenants.
    quotas: BTreeMap<String, i64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            header: "x-tenant".into(),
            quota: 1000,
            quotas: BTreeMap::new(),
        }
    }
}

struct TenantQuota(Config);

impl Plugin for TenantQuota {
    fn init(config: &str) -> Result<Self, String> {
        Ok(TenantQuota(parse_config(config)?))
    }

    fn on_request(&self, req: &RequestInfo) -> RequestAction {
        let Some(tenant) = req.header(&self.0.header) else {
            return RequestAction::reject(
                Code::InvalidArgument,
                format!("missing {}", self.0.header),
            );
        };
        let quota = self.0.quotas.get(tenant).copied().unwrap_or(self.0.quota);
        let used = counter_add(&format!("calls:{tenant}"), 1);
        if used > quota {
            return RequestAction::Reject(Reject {
                code: Code::ResourceExhausted as u32,
                message: format!("tenant {tenant} used its quota of {quota} calls"),
                trailers: vec![Header {
                    name: "x-quota-limit".into(),
                    value: quota.to_string(),
                }],
            });
        }
        RequestAction::proceed()
    }
}

export_plugin!(TenantQuota);
