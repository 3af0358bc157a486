//! What the plugin benchmarks share: the built components and a request to show them.

use std::path::{Path, PathBuf};

use synapsor::plugin::bindings::{Header, RequestInfo};

/// `plugins/build/`, after running `plugins/build.sh` (which builds only what changed).
pub fn built_plugins() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ok = std::process::Command::new("bash")
        .arg(root.join("plugins/build.sh"))
        .status()
        .expect("plugins/build.sh")
        .success();
    assert!(ok, "plugins/build.sh failed");
    root.join("plugins/build")
}

/// A unary call's `request-info` with these metadata entries.
pub fn request_info(metadata: &[(&str, &str)]) -> RequestInfo {
    RequestInfo {
        call_id: 1,
        method: "/billing.v1.Invoices/Get".into(),
        authority: "gw.local".into(),
        metadata: metadata
            .iter()
            .map(|(n, v)| Header {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect(),
        peer: "127.0.0.1:40000".into(),
        principal: None,
        deadline_ms: Some(2000),
    }
}
