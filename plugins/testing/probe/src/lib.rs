//! A plugin for the gateway's tests: it copies what it sees of a call into request metadata
//! (`x-probe-*`) so the backend can report it, rejects when asked to, appends an
//! `x-probe-status` trailer with the call's status, and overrides the status of calls whose
//! message says `override-me`.

use synapsor_plugin_sdk::{
    counter_add, export_plugin, log, now_unix_nanos, Code, Header, HeaderOp, Level, Plugin, Reject,
    RequestAction, RequestInfo, ResponseAction, ResponseInfo, StatusOverride,
};

struct Probe;

impl Plugin for Probe {
    fn init(config: &str) -> Result<Self, String> {
        log(Level::Info, &format!("probe starting with {config}"));
        Ok(Probe)
    }

    fn on_request(&self, req: &RequestInfo) -> RequestAction {
        if let Some(msg) = req.header("x-probe-reject") {
            return RequestAction::Reject(Reject {
                code: Code::PermissionDenied as u32,
                message: msg.to_string(),
                trailers: vec![Header {
                    name: "x-probe-why".into(),
                    value: "asked".into(),
                }],
            });
        }
        let n = counter_add("calls", 1);
        let mut ops = vec![
            HeaderOp::set("x-probe-method", req.method.clone()),
            HeaderOp::set("x-probe-authority", req.authority.clone()),
            HeaderOp::set("x-probe-peer", req.peer.clone()),
            HeaderOp::set("x-probe-call", n.to_string()),
            HeaderOp::set(
                "x-probe-now",
                (now_unix_nanos() > 1_600_000_000_000_000_000).to_string(),
            ),
            HeaderOp::remove("x-probe-drop"),
            HeaderOp::append("x-probe-multi", "second"),
        ];
        if let Some(p) = &req.principal {
            ops.push(HeaderOp::set("x-probe-principal", p.clone()));
        }
        if let Some(d) = req.deadline_ms {
            ops.push(HeaderOp::set("x-probe-deadline", d.to_string()));
        }
        if let Some(b) = req.header("x-probe-data-bin") {
            ops.push(HeaderOp::set("x-probe-bin-echo", b.to_string()));
        }
        RequestAction::Continue(ops)
    }

    fn on_response(&self, resp: &ResponseInfo) -> ResponseAction {
        if resp.message.contains("override-me") {
            return ResponseAction::OverrideStatus(StatusOverride {
                code: Code::FailedPrecondition as u32,
                message: format!("overridden from {}", resp.status),
            });
        }
        ResponseAction::Continue(vec![HeaderOp::set(
            "x-probe-status",
            resp.status.to_string(),
        )])
    }
}

export_plugin!(Probe);
