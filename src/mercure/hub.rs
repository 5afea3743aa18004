//! [`MercureHub`]: the settings of the Mercure endpoint a [`Hub`](crate::Hub) mounts.

use std::fmt;
use std::sync::Arc;

use http::Method;

use super::subscriptions::Active;
use crate::jwt::JwtAuthorizer;

/// Where the hub endpoint is by default, as the protocol says.
pub const DEFAULT_PATH: &str = "/.well-known/mercure";
/// Where the subscriptions API is, wherever the hub is: the protocol fixes it (and the topics of
/// subscription updates, and the claims that grant them, name it).
pub(crate) const SUBSCRIPTIONS_PATH: &str = "/.well-known/mercure/subscriptions";

/// A Mercure hub endpoint, mounted by the [`Hub`](crate::Hub)'s layer beside (or instead of)
/// its own `/events` and `/publish`: give it to
/// [`HubBuilder::mercure`](crate::HubBuilder::mercure).
///
/// It shares the hub's broker, limits, counters and shutdown. Tokens are checked with the
/// [`JwtAuthorizer`] given here, the Mercure way: publishing needs a token whose
/// `mercure.publish` selectors match every topic of the update; subscribing needs a valid token
/// (or none, when the authorizer allows anonymous subscribers), whose `mercure.subscribe`
/// selectors say which *private* updates reach the subscriber.
///
/// ```
/// use tower_sse_pubsub::Hub;
/// use tower_sse_pubsub::jwt::{JwtAuthorizer, JwtKey};
/// use tower_sse_pubsub::mercure::MercureHub;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let tokens = JwtAuthorizer::builder(JwtKey::hs256("!ChangeThisMercureHubJWTSecretKey!")?)
///     .allow_anonymous_subscribe()
///     .build();
/// let hub = Hub::builder()
///     .mercure(MercureHub::new(tokens).with_subscriptions())
///     .build()?;
/// // `hub.layer()` now serves /.well-known/mercure (and /events, /publish).
/// # drop(hub);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
#[must_use]
pub struct MercureHub {
    pub(crate) authorizer: JwtAuthorizer,
    pub(crate) path: String,
    pub(crate) subscriptions: bool,
    /// The open subscriptions, when `subscriptions` is on.
    pub(crate) active: Arc<Active>,
}

impl MercureHub {
    /// A hub endpoint at [`DEFAULT_PATH`] whose tokens `authorizer` checks.
    pub fn new(authorizer: JwtAuthorizer) -> Self {
        Self {
            authorizer,
            path: DEFAULT_PATH.to_owned(),
            subscriptions: false,
            active: Arc::default(),
        }
    }

    /// Serves the hub at `path` instead (it must start with `/`; checked by
    /// [`HubBuilder::build`](crate::HubBuilder::build)).
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Turns on the protocol's active subscriptions: a private update on
    /// `/.well-known/mercure/subscriptions/{topic}/{subscriber}` whenever a subscription opens or
    /// closes, and the subscriptions web API under `/.well-known/mercure/subscriptions` (there
    /// whatever the hub's [`path`](Self::path), as the protocol fixes it), both for subscribers
    /// whose `mercure.subscribe` selectors match.
    pub fn with_subscriptions(mut self) -> Self {
        self.subscriptions = true;
        self
    }

    /// What a request to `path` with `method` is for this endpoint, or `None` when it is not
    /// the endpoint's.
    pub(crate) fn route(&self, method: &Method, path: &str) -> Option<MercureRoute> {
        if path == self.path {
            return Some(match *method {
                Method::GET => MercureRoute::Subscribe,
                Method::POST => MercureRoute::Publish,
                _ => MercureRoute::WrongMethod("GET, POST"),
            });
        }
        let rest = path.strip_prefix(SUBSCRIPTIONS_PATH)?;
        if !self.subscriptions || !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        Some(match *method {
            Method::GET => MercureRoute::Subscriptions,
            _ => MercureRoute::WrongMethod("GET"),
        })
    }
}

impl fmt::Debug for MercureHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MercureHub")
            .field("path", &self.path)
            .field("subscriptions", &self.subscriptions)
            .field("authorizer", &self.authorizer)
            .finish()
    }
}

/// A request the Mercure endpoint serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MercureRoute {
    Subscribe,
    Publish,
    /// The subscriptions web API.
    Subscriptions,
    WrongMethod(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::JwtKey;

    fn hub(subscriptions: bool) -> MercureHub {
        let key = JwtKey::hs256("0123456789abcdef0123456789abcdef").expect("valid key");
        let hub = MercureHub::new(JwtAuthorizer::builder(key).build());
        if subscriptions {
            hub.with_subscriptions()
        } else {
            hub
        }
    }

    #[test]
    fn routes_the_hub_and_its_subscriptions_api() {
        let on = hub(true);
        let path = "/.well-known/mercure";
        assert_eq!(on.route(&Method::GET, path), Some(MercureRoute::Subscribe));
        assert_eq!(on.route(&Method::POST, path), Some(MercureRoute::Publish));
        assert_eq!(
            on.route(&Method::PUT, path),
            Some(MercureRoute::WrongMethod("GET, POST"))
        );
        for api in [
            "/.well-known/mercure/subscriptions",
            "/.well-known/mercure/subscriptions/a",
            "/.well-known/mercure/subscriptions/a/b",
        ] {
            assert_eq!(
                on.route(&Method::GET, api),
                Some(MercureRoute::Subscriptions)
            );
        }
        assert_eq!(on.route(&Method::GET, "/.well-known/mercurex"), None);
        assert_eq!(
            on.route(&Method::GET, "/.well-known/mercure/subscriptionsx"),
            None
        );
        let off = hub(false);
        assert_eq!(
            off.route(&Method::GET, "/.well-known/mercure/subscriptions"),
            None
        );
    }
}
