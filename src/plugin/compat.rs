//! One face for components of both contract versions: [`Pre`] (a linked component) and
//! [`Guest`] (an instance's exports). A 0.2 component is called as it is; a 0.1 component's
//! hooks get the 0.2 values converted field by field (the header hooks did not change shape)
//! and its `init` answers no message hooks, so it behaves exactly as it did under 0.1.

use wasmtime::component::InstancePre;
use wasmtime::{Engine, Store};

use super::bindings::{
    v1, v2, Header, HeaderOp, Hooks, Message, MessageAction, Reject, RequestAction, RequestInfo,
    ResponseAction, ResponseInfo, StatusOverride,
};
use super::host::HostState;

/// Which way a message travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client to upstream.
    Request,
    /// Upstream to client.
    Response,
}

/// A component linked and type-checked against one contract version.
pub enum Pre {
    /// Built against 0.1.x.
    V1(v1::InterceptorPre<HostState>),
    /// Built against 0.2.x.
    V2(v2::InterceptorPre<HostState>),
}

/// The exports of one instance.
pub enum Guest {
    /// A 0.1.x instance.
    V1(v1::Interceptor),
    /// A 0.2.x instance.
    V2(v2::Interceptor),
}

impl Pre {
    /// Type-checks a linked component against 0.2, then 0.1; the error says what each lacks.
    pub fn new(pre: InstancePre<HostState>) -> Result<(Pre, &'static str), String> {
        let v2_err = match v2::InterceptorPre::new(pre.clone()) {
            Ok(p) => return Ok((Pre::V2(p), "0.2")),
            Err(e) => e,
        };
        match v1::InterceptorPre::new(pre) {
            Ok(p) => Ok((Pre::V1(p), "0.1")),
            Err(v1_err) => Err(format!("as 0.2: {v2_err:#}; as 0.1: {v1_err:#}",)),
        }
    }

    /// The engine it was compiled for.
    pub fn engine(&self) -> &Engine {
        match self {
            Pre::V1(p) => p.engine(),
            Pre::V2(p) => p.engine(),
        }
    }

    /// A new instance in `store`.
    pub async fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Guest> {
        Ok(match self {
            Pre::V1(p) => Guest::V1(p.instantiate_async(store).await?),
            Pre::V2(p) => Guest::V2(p.instantiate_async(store).await?),
        })
    }
}

impl Guest {
    /// Calls `init`; a 0.1 instance asks for no message hooks.
    pub async fn init(
        &self,
        store: &mut Store<HostState>,
        config: &str,
    ) -> wasmtime::Result<Result<Hooks, String>> {
        match self {
            Guest::V1(g) => Ok(g.call_init(store, config).await?.map(|()| Hooks::empty())),
            Guest::V2(g) => g.call_init(store, config).await,
        }
    }

    /// Calls `on-request`.
    pub async fn on_request(
        &self,
        store: &mut Store<HostState>,
        info: RequestInfo,
    ) -> wasmtime::Result<RequestAction> {
        match self {
            Guest::V1(g) => Ok(g.call_on_request(store, &request_info(info)).await?.into()),
            Guest::V2(g) => g.call_on_request(store, &info).await,
        }
    }

    /// Calls `on-response`.
    pub async fn on_response(
        &self,
        store: &mut Store<HostState>,
        info: ResponseInfo,
    ) -> wasmtime::Result<ResponseAction> {
        match self {
            Guest::V1(g) => Ok(g
                .call_on_response(store, &response_info(info))
                .await?
                .into()),
            Guest::V2(g) => g.call_on_response(store, &info).await,
        }
    }

    /// Calls the message hook of `dir` (never called on a 0.1 instance, which asks for none).
    pub async fn on_message(
        &self,
        store: &mut Store<HostState>,
        dir: Direction,
        message: &Message,
    ) -> wasmtime::Result<MessageAction> {
        match (self, dir) {
            (Guest::V1(_), _) => Ok(MessageAction::Continue),
            (Guest::V2(g), Direction::Request) => g.call_on_request_message(store, message).await,
            (Guest::V2(g), Direction::Response) => g.call_on_response_message(store, message).await,
        }
    }
}

use v1::synapsor::plugin::types as t1;

fn headers(h: Vec<Header>) -> Vec<t1::Header> {
    h.into_iter()
        .map(|h| t1::Header {
            name: h.name,
            value: h.value,
        })
        .collect()
}

fn request_info(i: RequestInfo) -> t1::RequestInfo {
    t1::RequestInfo {
        call_id: i.call_id,
        method: i.method,
        authority: i.authority,
        metadata: headers(i.metadata),
        peer: i.peer,
        principal: i.principal,
        deadline_ms: i.deadline_ms,
    }
}

fn response_info(i: ResponseInfo) -> t1::ResponseInfo {
    t1::ResponseInfo {
        call_id: i.call_id,
        method: i.method,
        status: i.status,
        message: i.message,
        headers: headers(i.headers),
        trailers: headers(i.trailers),
    }
}

impl From<t1::Header> for Header {
    fn from(h: t1::Header) -> Header {
        Header {
            name: h.name,
            value: h.value,
        }
    }
}

impl From<t1::HeaderOp> for HeaderOp {
    fn from(op: t1::HeaderOp) -> HeaderOp {
        match op {
            t1::HeaderOp::Set(h) => HeaderOp::Set(h.into()),
            t1::HeaderOp::Append(h) => HeaderOp::Append(h.into()),
            t1::HeaderOp::Remove(n) => HeaderOp::Remove(n),
        }
    }
}

impl From<t1::RequestAction> for RequestAction {
    fn from(a: t1::RequestAction) -> RequestAction {
        match a {
            t1::RequestAction::Continue(ops) => {
                RequestAction::Continue(ops.into_iter().map(Into::into).collect())
            }
            t1::RequestAction::Reject(r) => RequestAction::Reject(Reject {
                code: r.code,
                message: r.message,
                trailers: r.trailers.into_iter().map(Into::into).collect(),
            }),
        }
    }
}

impl From<t1::ResponseAction> for ResponseAction {
    fn from(a: t1::ResponseAction) -> ResponseAction {
        match a {
            t1::ResponseAction::Continue(ops) => {
                ResponseAction::Continue(ops.into_iter().map(Into::into).collect())
            }
            t1::ResponseAction::OverrideStatus(o) => {
                ResponseAction::OverrideStatus(StatusOverride {
                    code: o.code,
                    message: o.message,
                })
            }
        }
    }
}
