//! Write synapsor interceptor plugins in Rust.
//!
//! A plugin is a type that implements [`Plugin`]; [`export_plugin!`] turns it into the
//! `synapsor:plugin/interceptor` component the gateway loads. Every hook has a default, so a
//! plugin writes only what it needs:
//!
//! ```ignore
//! use synapsor_plugin_sdk::{export_plugin, Code, Plugin, RequestAction, RequestInfo};
//!
//! struct DenyAnonymous;
//!
//! impl Plugin for DenyAnonymous {
//!     fn init(_config: &str) -> Result<Self, String> {
//!         Ok(DenyAnonymous)
//!     }
//!     fn on_request(&self, req: &RequestInfo) -> RequestAction {
//!         match req.header("x-user") {
//!             Some(_) => RequestAction::proceed(),
//!             None => RequestAction::reject(Code::Unauthenticated, "who are you?"),
//!         }
//!     }
//! }
//!
//! export_plugin!(DenyAnonymous);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`; the `.wasm` under
//! `target/wasm32-wasip2/release/` is the component.
//!
//! # Messages, properties and metrics (contract 0.2)
//!
//! A plugin that wants to see the gRPC messages of a call answers [`Plugin::hooks`] (asked
//! once, right after [`Plugin::init`]); the gateway then calls [`Plugin::on_request_message`]
//! and/or [`Plugin::on_response_message`] for every message, which can let it through, replace
//! it or end the call ([`MessageAction`]). The [`wire`] module reads and rewrites protobuf
//! messages without a schema:
//!
//! ```ignore
//! use synapsor_plugin_sdk::{export_plugin, wire, Code, Hooks, Message, MessageAction, Plugin};
//!
//! struct NoEmptyNames;
//!
//! impl Plugin for NoEmptyNames {
//!     fn init(_config: &str) -> Result<Self, String> {
//!         Ok(NoEmptyNames)
//!     }
//!     fn hooks(&self) -> Hooks {
//!         Hooks::REQUEST_MESSAGES
//!     }
//!     fn on_request_message(&self, msg: &Message) -> MessageAction {
//!         match wire::first(&msg.data, "1") {
//!             Ok(Some(name)) if name.as_bytes() != Some(b"") => MessageAction::Continue,
//!             _ => MessageAction::reject(Code::InvalidArgument, "field 1 (name) is required"),
//!         }
//!     }
//! }
//!
//! export_plugin!(NoEmptyNames);
//! ```
//!
//! [`properties`] tells a hook what the gateway knows of its call (listener, upstream, TLS,
//! timing), and [`Counter`], [`Gauge`] and [`Histogram`] are metrics of the plugin's own on the
//! gateway's `/metrics`.
//!
//! # Callouts and shared state (0.2.1)
//!
//! A hook can make a unary gRPC call to an upstream group of the gateway, one the plugin's
//! YAML lists under `callouts.groups` ([`callout`]: [`Call`], answering a
//! [`callout::Response`] or a [`CalloutError`]), and keep bytes with a time to live in a store
//! every instance of the plugin shares, in the gateway's memory or in Redis ([`state`]:
//! [`state::get`], [`state::set`], [`state::delete`], [`state::compare_and_swap`], failing with
//! a [`StateError`]). Together they make an external authorization check with a cache:
//!
//! ```no_run
//! use std::time::Duration;
//! use synapsor_plugin_sdk::{state, Call, CalloutError, Code, RequestAction};
//!
//! fn authorize(token: &str) -> RequestAction {
//!     let key = format!("authz:{token}");
//!     if let Ok(Some(_)) = state::get(&key) {
//!         return RequestAction::proceed(); // allowed a moment ago
//!     }
//!     match Call::new("authz", "/acme.Authz/Check")
//!         .metadata("authorization", format!("Bearer {token}"))
//!         .send()
//!     {
//!         Ok(_) => {
//!             // A full store or an unreachable Redis only costs the cache.
//!             let _ = state::set(&key, b"1", Some(Duration::from_secs(5)));
//!             RequestAction::proceed()
//!         }
//!         Err(CalloutError::Status(st)) => RequestAction::Reject(st.to_reject()),
//!         Err(e) => RequestAction::reject(Code::Unavailable, format!("authz: {e}")),
//!     }
//! }
//! ```
//!
//! Callouts work in hooks, not in [`Plugin::init`]. The examples `ext-authz` and `token-cache`
//! under `plugins/examples/` are complete plugins built this way.

use std::any::Any;
use std::cell::RefCell;

#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "interceptor",
        pub_export_macro: true,
        additional_derives: [PartialEq],
        default_bindings_module: "synapsor_plugin_sdk::bindings",
    });
}

pub mod callout;
mod code;
pub mod metrics;
pub mod state;
pub mod wire;

pub use bindings::synapsor::plugin::host::{counter_add, now_unix_nanos, Level};
pub use bindings::synapsor::plugin::types::{
    CallProperties, Header, HeaderOp, Hooks, Message, MessageAction, Metric, MetricKind, Reject,
    RequestAction, RequestInfo, ResponseAction, ResponseInfo, StatusOverride,
};
pub use callout::{Call, CalloutError};
pub use code::Code;
pub use metrics::{Counter, Gauge, Histogram};
pub use state::StateError;

/// What the gateway knows of the call the running hook is for: its listener, the upstream
/// group and endpoint (once the call is forwarded: in `on_response` and
/// `on_response_message`), when it arrived and how long ago, the TLS server name and the
/// client's certificate identity. `None` in [`Plugin::init`].
pub fn properties() -> Option<CallProperties> {
    bindings::synapsor::plugin::host::properties()
}

/// Deserializes the plugin's `config:` (JSON text, as `init` receives it) into `T`; a JSON
/// `null` (no config) becomes `T::default()`.
pub fn parse_config<T: serde::de::DeserializeOwned + Default>(config: &str) -> Result<T, String> {
    if config.trim() == "null" || config.trim().is_empty() {
        return Ok(T::default());
    }
    serde_json::from_str(config).map_err(|e| format!("bad config: {e}"))
}

/// Writes a line to the gateway's log, tagged with the plugin's name.
pub fn log(level: Level, message: &str) {
    bindings::synapsor::plugin::host::log(level, message);
}

/// An interceptor plugin. One value is created per instance by [`Plugin::init`]; the gateway may
/// run many instances of a plugin side by side and recycle them at any time, so state that must
/// be shared goes through [`state`] or [`counter_add`] (or, to be seen on `/metrics`, a
/// [`Counter`], [`Gauge`] or [`Histogram`]).
pub trait Plugin: Sized + 'static {
    /// Builds the plugin from its `config:` (JSON text; see [`parse_config`]). An error stops
    /// the plugin from loading.
    fn init(config: &str) -> Result<Self, String>;

    /// Decides on a call before it is forwarded. The default lets it through unchanged.
    fn on_request(&self, _req: &RequestInfo) -> RequestAction {
        RequestAction::proceed()
    }

    /// Sees a call's status. The default keeps it unchanged.
    fn on_response(&self, _resp: &ResponseInfo) -> ResponseAction {
        ResponseAction::Continue(Vec::new())
    }

    /// Which message hooks the gateway calls: [`Hooks::REQUEST_MESSAGES`],
    /// [`Hooks::RESPONSE_MESSAGES`], both (`Hooks::all()`) or none. Asked once per instance,
    /// right after [`Plugin::init`]; the first instance's answer holds for the loaded version.
    /// The default asks for none: calls through the plugin are not split into messages.
    fn hooks(&self) -> Hooks {
        Hooks::empty()
    }

    /// Sees each message the client sends (after [`Plugin::on_request`] let the call through),
    /// in order, when [`Plugin::hooks`] asked for [`Hooks::REQUEST_MESSAGES`]. The default lets
    /// it through.
    fn on_request_message(&self, _msg: &Message) -> MessageAction {
        MessageAction::Continue
    }

    /// Sees each message the upstream sends, in order, when [`Plugin::hooks`] asked for
    /// [`Hooks::RESPONSE_MESSAGES`]. The default lets it through.
    fn on_response_message(&self, _msg: &Message) -> MessageAction {
        MessageAction::Continue
    }
}

impl RequestInfo {
    /// The first value of metadata `name` (lower-case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value.as_str())
    }
}

impl ResponseInfo {
    /// The first value of trailer `name` (lower-case), if present.
    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value.as_str())
    }
}

impl RequestAction {
    /// Forward the call unchanged.
    pub fn proceed() -> RequestAction {
        RequestAction::Continue(Vec::new())
    }

    /// End the call with `code` and `message`.
    pub fn reject(code: Code, message: impl Into<String>) -> RequestAction {
        RequestAction::Reject(Reject {
            code: code as u32,
            message: message.into(),
            trailers: Vec::new(),
        })
    }
}

impl ResponseAction {
    /// Keep the status and trailers unchanged.
    pub fn proceed() -> ResponseAction {
        ResponseAction::Continue(Vec::new())
    }
}

impl MessageAction {
    /// Replace the message with `data` (one whole message).
    pub fn replace(data: impl Into<Vec<u8>>) -> MessageAction {
        MessageAction::Replace(data.into())
    }

    /// End the call with `code` and `message`.
    pub fn reject(code: Code, message: impl Into<String>) -> MessageAction {
        MessageAction::Reject(Reject {
            code: code as u32,
            message: message.into(),
            trailers: Vec::new(),
        })
    }
}

impl Reject {
    /// A refusal with `code` and `message` and no extra trailers.
    pub fn new(code: Code, message: impl Into<String>) -> Reject {
        Reject {
            code: code as u32,
            message: message.into(),
            trailers: Vec::new(),
        }
    }

    /// Adds a trailer sent with the status.
    pub fn with_trailer(mut self, name: impl Into<String>, value: impl Into<String>) -> Reject {
        self.trailers.push(Header {
            name: name.into(),
            value: value.into(),
        });
        self
    }
}

impl HeaderOp {
    /// Replace every value of `name` with `value`.
    pub fn set(name: impl Into<String>, value: impl Into<String>) -> HeaderOp {
        HeaderOp::Set(Header {
            name: name.into(),
            value: value.into(),
        })
    }

    /// Add a value for `name`.
    pub fn append(name: impl Into<String>, value: impl Into<String>) -> HeaderOp {
        HeaderOp::Append(Header {
            name: name.into(),
            value: value.into(),
        })
    }

    /// Remove every value of `name`.
    pub fn remove(name: impl Into<String>) -> HeaderOp {
        HeaderOp::Remove(name.into())
    }
}

thread_local! {
    static STATE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

#[doc(hidden)]
pub mod __rt {
    use super::*;

    pub fn init<P: Plugin>(config: &str) -> Result<Hooks, String> {
        let p = P::init(config)?;
        let hooks = p.hooks();
        STATE.with(|s| *s.borrow_mut() = Some(Box::new(p)));
        Ok(hooks)
    }

    fn with<P: Plugin, R>(f: impl FnOnce(&P) -> R) -> Option<R> {
        STATE.with(|s| s.borrow().as_ref()?.downcast_ref::<P>().map(f))
    }

    pub fn on_request<P: Plugin>(info: RequestInfo) -> RequestAction {
        with::<P, _>(|p| p.on_request(&info))
            .unwrap_or_else(|| RequestAction::reject(Code::Internal, "plugin used before init"))
    }

    pub fn on_response<P: Plugin>(info: ResponseInfo) -> ResponseAction {
        with::<P, _>(|p| p.on_response(&info)).unwrap_or(ResponseAction::Continue(Vec::new()))
    }

    pub fn on_request_message<P: Plugin>(msg: Message) -> MessageAction {
        with::<P, _>(|p| p.on_request_message(&msg))
            .unwrap_or_else(|| MessageAction::reject(Code::Internal, "plugin used before init"))
    }

    pub fn on_response_message<P: Plugin>(msg: Message) -> MessageAction {
        with::<P, _>(|p| p.on_response_message(&msg))
            .unwrap_or_else(|| MessageAction::reject(Code::Internal, "plugin used before init"))
    }
}

/// Exports a [`Plugin`] type as the component's `interceptor` world.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        struct __SynapsorGuest;

        impl $crate::bindings::Guest for __SynapsorGuest {
            fn init(config: String) -> Result<$crate::Hooks, String> {
                $crate::__rt::init::<$plugin>(&config)
            }
            fn on_request(info: $crate::RequestInfo) -> $crate::RequestAction {
                $crate::__rt::on_request::<$plugin>(info)
            }
            fn on_response(info: $crate::ResponseInfo) -> $crate::ResponseAction {
                $crate::__rt::on_response::<$plugin>(info)
            }
            fn on_request_message(msg: $crate::Message) -> $crate::MessageAction {
                $crate::__rt::on_request_message::<$plugin>(msg)
            }
            fn on_response_message(msg: $crate::Message) -> $crate::MessageAction {
                $crate::__rt::on_response_message::<$plugin>(msg)
            }
        }

        $crate::bindings::export!(__SynapsorGuest with_types_in $crate::bindings);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct Conf {
        both: bool,
    }

    struct Echo(Conf);

    impl Plugin for Echo {
        fn init(config: &str) -> Result<Self, String> {
            Ok(Echo(parse_config(config)?))
        }
        fn hooks(&self) -> Hooks {
            if self.0.both {
                Hooks::all()
            } else {
                Hooks::REQUEST_MESSAGES
            }
        }
        fn on_request_message(&self, msg: &Message) -> MessageAction {
            MessageAction::replace(msg.data.iter().rev().copied().collect::<Vec<_>>())
        }
    }

    struct Quiet;

    impl Plugin for Quiet {
        fn init(_: &str) -> Result<Self, String> {
            Ok(Quiet)
        }
    }

    fn msg(data: &[u8]) -> Message {
        Message {
            call_id: 1,
            method: "/a.B/C".into(),
            index: 0,
            compressed: false,
            data: data.to_vec(),
        }
    }

    fn is_internal_reject(a: &MessageAction) -> bool {
        matches!(a, MessageAction::Reject(r) if r.code == Code::Internal as u32)
    }

    #[test]
    fn hooks_follow_init() {
        // Each test runs on its own thread, so its own plugin state.
        assert!(is_internal_reject(&__rt::on_request_message::<Echo>(msg(
            b"x"
        ))));
        assert_eq!(__rt::init::<Echo>("null"), Ok(Hooks::REQUEST_MESSAGES));
        assert_eq!(
            __rt::on_request_message::<Echo>(msg(b"abc")),
            MessageAction::Replace(b"cba".to_vec())
        );
        assert_eq!(
            __rt::on_response_message::<Echo>(msg(b"abc")),
            MessageAction::Continue
        );
        assert_eq!(__rt::init::<Echo>(r#"{"both": true}"#), Ok(Hooks::all()));
        assert!(__rt::init::<Echo>(r#"{"both": 1}"#)
            .unwrap_err()
            .starts_with("bad config"));
    }

    #[test]
    fn defaults_ask_for_nothing() {
        assert_eq!(__rt::init::<Quiet>(""), Ok(Hooks::empty()));
        assert_eq!(
            __rt::on_request_message::<Quiet>(msg(b"x")),
            MessageAction::Continue
        );
        assert_eq!(
            __rt::on_response_message::<Quiet>(msg(b"x")),
            MessageAction::Continue
        );
        assert_eq!(
            __rt::on_response::<Quiet>(ResponseInfo {
                call_id: 1,
                method: String::new(),
                status: 0,
                message: String::new(),
                headers: vec![],
                trailers: vec![],
            }),
            ResponseAction::proceed()
        );
    }

    #[test]
    fn helpers() {
        let MessageAction::Reject(r) = MessageAction::reject(Code::PermissionDenied, "no") else {
            panic!("not a reject");
        };
        assert_eq!((r.code, r.message.as_str()), (7, "no"));
        assert!(r.trailers.is_empty());
        let r = Reject::new(Code::ResourceExhausted, "big").with_trailer("x-why", "size");
        assert_eq!(r.code, 8);
        assert_eq!(r.trailers[0].name, "x-why");
        assert_eq!(
            MessageAction::replace(&b"ab"[..]),
            MessageAction::Replace(b"ab".to_vec())
        );
        for n in 0..=16 {
            assert_eq!(Code::from_u32(n).map(|c| c as u32), Some(n));
        }
        assert_eq!(Code::from_u32(17), None);
        assert_eq!(Code::PermissionDenied.name(), "PERMISSION_DENIED");
        assert_eq!(Code::Unauthenticated.name(), "UNAUTHENTICATED");
    }
}
