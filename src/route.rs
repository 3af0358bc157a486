//! Picks the upstream group of a call: the listener's routes in order (by `:path` prefix or a
//! metadata value), then the listener's default upstream. No match → UNIMPLEMENTED.

use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};

use crate::config::RouteConfig;
use crate::upstream::Upstream;

enum Matcher {
    PathPrefix(String),
    Metadata(HeaderName, HeaderValue),
}

/// The routing table of one listener.
pub struct Router {
    routes: Vec<(Matcher, Arc<Upstream>)>,
    default: Option<Arc<Upstream>>,
}

impl Router {
    /// Builds the table; `find` resolves upstream names (validated beforehand).
    pub fn new(
        routes: &[RouteConfig],
        default: Option<&str>,
        find: impl Fn(&str) -> Arc<Upstream>,
    ) -> Router {
        let routes = routes
            .iter()
            .map(|r| {
                let m = match (&r.path_prefix, &r.metadata) {
                    (Some(p), _) => Matcher::PathPrefix(p.clone()),
                    (None, Some(m)) => Matcher::Metadata(
                        HeaderName::from_bytes(m.name.as_bytes()).expect("validated name"),
                        HeaderValue::from_str(&m.value).expect("validated value"),
                    ),
                    (None, None) => unreachable!("validated: one matcher"),
                };
                (m, find(&r.upstream))
            })
            .collect();
        Router {
            routes,
            default: default.map(find),
        }
    }

    /// Which route matches: its index in the config, or the number of routes for the default
    /// upstream; `None` when nothing matches.
    pub fn route_index(&self, req: &http::request::Parts) -> Option<usize> {
        for (i, (m, _)) in self.routes.iter().enumerate() {
            let hit = match m {
                Matcher::PathPrefix(p) => req.uri.path().starts_with(p.as_str()),
                Matcher::Metadata(name, value) => {
                    req.headers.get_all(name).iter().any(|v| v == value)
                }
            };
            if hit {
                return Some(i);
            }
        }
        self.default.as_ref().map(|_| self.routes.len())
    }

    /// The upstream of route `index` (as [`Router::route_index`] numbers them).
    pub fn upstream(&self, index: usize) -> &Arc<Upstream> {
        match self.routes.get(index) {
            Some((_, up)) => up,
            None => self.default.as_ref().expect("the default route exists"),
        }
    }

    /// How many routes there are (without the default).
    pub fn routes(&self) -> usize {
        self.routes.len()
    }
}
