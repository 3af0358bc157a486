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

use std::any::Any;
use std::cell::RefCell;

#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "interceptor",
        pub_export_macro: true,
        default_bindings_module: "synapsor_plugin_sdk::bindings",
    });
}

pub use bindings::synapsor::plugin::host::{counter_add, now_unix_nanos, Level};
pub use bindings::synapsor::plugin::types::{
    Header, HeaderOp, Reject, RequestAction, RequestInfo, ResponseAction, ResponseInfo,
    StatusOverride,
};

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

/// gRPC status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
#[allow(missing_docs)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

/// An interceptor plugin. One value is created per instance by [`Plugin::init`]; the gateway may
/// run many instances of a plugin side by side and recycle them at any time, so state that must
/// be shared goes through [`counter_add`].
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

    pub fn init<P: Plugin>(config: &str) -> Result<(), String> {
        let p = P::init(config)?;
        STATE.with(|s| *s.borrow_mut() = Some(Box::new(p)));
        Ok(())
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
}

/// Exports a [`Plugin`] type as the component's `interceptor` world.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        struct __SynapsorGuest;

        impl $crate::bindings::Guest for __SynapsorGuest {
            fn init(config: String) -> Result<(), String> {
                $crate::__rt::init::<$plugin>(&config)
            }
            fn on_request(info: $crate::RequestInfo) -> $crate::RequestAction {
                $crate::__rt::on_request::<$plugin>(info)
            }
            fn on_response(info: $crate::ResponseInfo) -> $crate::ResponseAction {
                $crate::__rt::on_response::<$plugin>(info)
            }
        }

        $crate::bindings::export!(__SynapsorGuest with_types_in $crate::bindings);
    };
}
