//! JSON Web Token authorization (feature `jwt`): [`JwtAuthorizer`].
//!
//! Publishers and subscribers present a JWS in compact form, as the Mercure protocol defines it:
//! in an `Authorization: Bearer` header, in a cookie (`mercureAuthorization` by default), or,
//! when the builder allows it, in the `authorization` query parameter, with that precedence.
//! The token's signature is checked with the key for its kind of access (HS256, RS256 or ES256;
//! publishers and subscribers may have different keys), and its `exp` and `nbf` when present.
//!
//! What a token allows is in Mercure's claim:
//!
//! ```json
//! {"mercure": {"publish": ["https://example.com/books/{id}"], "subscribe": ["*"]}, "exp": 1767225600}
//! ```
//!
//! Each list holds topic [`Selector`](crate::Selector)s (`*`, exact topics, URI templates). On the hub's
//! `/publish` and `/events` endpoints:
//!
//! * **publish** needs a token whose `mercure.publish` matches every topic of the event;
//! * **subscribe** needs a token whose `mercure.subscribe` matches every topic asked for (or no
//!   token at all, with [`JwtAuthorizerBuilder::allow_anonymous_subscribe`], for public events
//!   only). The stream receives private events whose topics its selectors match, and closes when
//!   the token expires.
//!
//! A request without a token gets 401 with a `WWW-Authenticate: Bearer` challenge, as does one
//! whose token is invalid, expired or not yet valid (`error="invalid_token"`); a valid token that
//! does not cover the topics gets 403. Nothing is published when publishing is refused.
//!
//! ```
//! use tower_sse_pubsub::Hub;
//! use tower_sse_pubsub::jwt::{JwtAuthorizer, JwtKey};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let authorizer = JwtAuthorizer::builder(JwtKey::hs256("!ChangeThisMercureHubJWTSecretKey!")?)
//!     .allow_anonymous_subscribe()
//!     .build();
//! let hub = Hub::builder().authorizer(authorizer).build()?;
//! # drop(hub);
//! # Ok(())
//! # }
//! ```

mod claims;
mod key;
mod origin;
mod token;

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use http::HeaderValue;
use http::request::Parts;
use jsonwebtoken::Validation;

pub use key::{JwtKey, JwtKeyError, MIN_HS256_SECRET};

use self::claims::Claims;
use self::token::Sources;
use crate::auth::{Access, Allowed, Authorizer, Denied};
use crate::broker::{BoxFuture, Grant};
use crate::event::Topic;

/// The cookie Mercure recommends for the token.
pub const DEFAULT_COOKIE: &str = "mercureAuthorization";

/// An [`Authorizer`] that reads JSON Web Tokens; see the [module docs](self).
#[derive(Clone)]
pub struct JwtAuthorizer {
    publisher: Verifier,
    subscriber: Verifier,
    sources: Sources,
    anonymous_subscribe: bool,
    /// Origins (besides the hub's own) whose pages may publish with the cookie.
    publish_origins: Vec<String>,
}

/// A key and the validation rules for one kind of access.
#[derive(Clone)]
struct Verifier {
    key: JwtKey,
    validation: Validation,
}

impl Verifier {
    fn new(key: JwtKey, leeway: Duration) -> Self {
        let mut validation = Validation::new(key.algorithm());
        // `exp` and `nbf` are checked when present, not required: Mercure tokens often have none.
        validation.required_spec_claims = HashSet::new();
        validation.validate_nbf = true;
        validation.leeway = leeway.as_secs();
        // Mercure defines no audience; a token's `aud` is not checked.
        validation.validate_aud = false;
        Self { key, validation }
    }

    /// The token's claims once its signature and dates check out.
    fn verify(&self, token: &str) -> Result<Claims, Denied> {
        let data = jsonwebtoken::decode::<serde_json::Value>(
            token,
            self.key.decoding_key(),
            &self.validation,
        )
        .map_err(|error| {
            use jsonwebtoken::errors::ErrorKind;
            let reason = match error.kind() {
                ErrorKind::ExpiredSignature => "the token has expired",
                ErrorKind::ImmatureSignature => "the token is not valid yet (`nbf`)",
                ErrorKind::InvalidAlgorithm => "the token is signed with another algorithm",
                ErrorKind::InvalidSignature => "the token's signature does not verify",
                _ => "the token is not a valid JWS",
            };
            invalid_token(reason)
        })?;
        Claims::read(&data.claims).map_err(invalid_token)
    }
}

impl JwtAuthorizer {
    /// A builder with `key` for both publishers and subscribers.
    pub fn builder(key: JwtKey) -> JwtAuthorizerBuilder {
        JwtAuthorizerBuilder {
            publisher: key.clone(),
            subscriber: key,
            cookie: Some(DEFAULT_COOKIE.to_owned()),
            query: false,
            anonymous_subscribe: false,
            leeway: Duration::ZERO,
            publish_origins: Vec::new(),
        }
    }

    fn decide(&self, parts: &Parts, access: Access, topics: &[Topic]) -> Result<Allowed, Denied> {
        let token = token::locate(parts, &self.sources).map_err(malformed_credentials)?;
        if access == Access::Publish
            && let Some((_, token::Source::Cookie)) = &token
        {
            origin::check(parts, &self.publish_origins)?;
        }
        let token = token.map(|(token, _)| token);
        let (verifier, what) = match access {
            Access::Publish => (&self.publisher, "publish"),
            Access::Subscribe => (&self.subscriber, "subscribe"),
        };
        let Some(token) = token else {
            if access == Access::Subscribe && self.anonymous_subscribe {
                return Ok(Allowed::new());
            }
            return Err(Denied::unauthorized(format!(
                "a token is required to {what}: send `Authorization: Bearer <JWS>`"
            ))
            .with_challenge(HeaderValue::from_static("Bearer")));
        };
        let claims = verifier.verify(&token)?;
        let selectors = match access {
            Access::Publish => claims.publish,
            _ => claims.subscribe,
        }
        .filter(|selectors| !selectors.is_empty())
        .ok_or_else(|| {
            Denied::forbidden(format!(
                "the token's `mercure.{what}` claim allows no topic"
            ))
        })?;
        if let Some(topic) = topics
            .iter()
            .find(|topic| !selectors.iter().any(|s| s.matches(topic.as_str())))
        {
            return Err(Denied::forbidden(format!(
                "the token does not allow you to {what} on {topic:?}"
            )));
        }
        let mut allowed = Allowed::new().with_grant(Grant::Selectors(selectors));
        if let Some(expires) = claims.expires {
            allowed = allowed.until(expires + Duration::from_secs(verifier.validation.leeway));
        }
        Ok(allowed)
    }
}

/// A Mercure subscriber as its token (or its lack of one) shows it.
#[cfg(feature = "mercure")]
#[derive(Debug, Clone)]
pub(crate) struct MercureSubscriber {
    /// The private updates it may receive (its `mercure.subscribe` selectors) and when its
    /// stream must close (its `exp`).
    pub(crate) allowed: Allowed,
    /// `mercure.payload`.
    pub(crate) payload: Option<serde_json::Value>,
}

#[cfg(feature = "mercure")]
impl JwtAuthorizer {
    /// A Mercure subscriber: without a token (when anonymous subscribers are allowed) it gets
    /// public updates; with one, its `mercure.subscribe` selectors say which private updates
    /// reach it, not which topics it may ask for (the protocol lets anyone subscribe to any
    /// selector and filters private updates per subscriber).
    pub(crate) fn mercure_subscriber(&self, parts: &Parts) -> Result<MercureSubscriber, Denied> {
        let token = token::locate(parts, &self.sources)
            .map_err(malformed_credentials)?
            .map(|(token, _)| token);
        let Some(token) = token else {
            if self.anonymous_subscribe {
                return Ok(MercureSubscriber {
                    allowed: Allowed::new(),
                    payload: None,
                });
            }
            return Err(Denied::unauthorized(
                "a token is required to subscribe: send `Authorization: Bearer <JWS>` or the \
                 `mercureAuthorization` cookie",
            )
            .with_challenge(HeaderValue::from_static("Bearer")));
        };
        let claims = self.subscriber.verify(&token)?;
        let mut allowed = Allowed::new();
        if let Some(selectors) = claims.subscribe.filter(|s| !s.is_empty()) {
            allowed = allowed.with_grant(Grant::Selectors(selectors));
        }
        if let Some(expires) = claims.expires {
            allowed =
                allowed.until(expires + Duration::from_secs(self.subscriber.validation.leeway));
        }
        Ok(MercureSubscriber {
            allowed,
            payload: claims.payload,
        })
    }

    /// Whether the request's token lets it read the subscriptions API at `path`: its
    /// `mercure.subscribe` selectors must match the path.
    pub(crate) fn mercure_api(&self, parts: &Parts, path: &str) -> Result<(), Denied> {
        let token = token::locate(parts, &self.sources)
            .map_err(malformed_credentials)?
            .map(|(token, _)| token);
        let Some(token) = token else {
            return Err(Denied::unauthorized(
                "a token is required to read subscriptions: send `Authorization: Bearer <JWS>`",
            )
            .with_challenge(HeaderValue::from_static("Bearer")));
        };
        let claims = self.subscriber.verify(&token)?;
        let allowed = claims
            .subscribe
            .is_some_and(|selectors| selectors.iter().any(|s| s.matches(path)));
        if !allowed {
            return Err(Denied::forbidden(format!(
                "the token's `mercure.subscribe` claim does not match {path:?}"
            )));
        }
        Ok(())
    }

    /// Whether the request's token lets it publish to every one of `topics`.
    pub(crate) fn mercure_publisher(&self, parts: &Parts, topics: &[Topic]) -> Result<(), Denied> {
        self.decide(parts, Access::Publish, topics).map(drop)
    }
}

/// The answer to an `Authorization` header that is not a bearer token.
fn malformed_credentials(reason: &'static str) -> Denied {
    Denied::unauthorized(reason)
        .with_challenge(HeaderValue::from_static("Bearer error=\"invalid_request\""))
}

impl Authorizer for JwtAuthorizer {
    fn authorize<'a>(
        &'a self,
        parts: &'a Parts,
        access: Access,
        topics: &'a [Topic],
    ) -> BoxFuture<'a, Result<Allowed, Denied>> {
        Box::pin(std::future::ready(self.decide(parts, access, topics)))
    }
}

impl fmt::Debug for JwtAuthorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuthorizer")
            .field("publisher_key", &self.publisher.key)
            .field("subscriber_key", &self.subscriber.key)
            .field("cookie", &self.sources.cookie)
            .field("query_token", &self.sources.query)
            .field("anonymous_subscribe", &self.anonymous_subscribe)
            .field("publish_origins", &self.publish_origins)
            .finish()
    }
}

/// Builds a [`JwtAuthorizer`]; start with [`JwtAuthorizer::builder`].
///
/// ```
/// use std::time::Duration;
/// use tower_sse_pubsub::jwt::{JwtAuthorizer, JwtKey};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let public_pem = include_bytes!("../../tests/fixtures/jwt/rs256-public.pem");
/// // Publishers share a secret with the hub; subscribers' tokens come from an identity
/// // provider that signs with RSA.
/// let authorizer = JwtAuthorizer::builder(JwtKey::hs256("a-long-random-publisher-secret-0123")?)
///     .subscriber_key(JwtKey::rs256_pem(public_pem)?)
///     .cookie_name("hubAuthorization")
///     .leeway(Duration::from_secs(5))
///     .build();
/// # drop(authorizer);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct JwtAuthorizerBuilder {
    publisher: JwtKey,
    subscriber: JwtKey,
    cookie: Option<String>,
    query: bool,
    anonymous_subscribe: bool,
    leeway: Duration,
    publish_origins: Vec<String>,
}

impl JwtAuthorizerBuilder {
    /// The key publishers' tokens are checked with (default: the builder's key).
    pub fn publisher_key(mut self, key: JwtKey) -> Self {
        self.publisher = key;
        self
    }

    /// The key subscribers' tokens are checked with (default: the builder's key).
    pub fn subscriber_key(mut self, key: JwtKey) -> Self {
        self.subscriber = key;
        self
    }

    /// The cookie that may carry the token (default [`DEFAULT_COOKIE`]); browsers' EventSource
    /// cannot set headers, so this is how they present one. Set it `HttpOnly`, `Secure` and
    /// `SameSite`, with the hub's path.
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie = Some(name.into());
        self
    }

    /// Reads no cookie: only the `Authorization` header (and the query, if allowed).
    pub fn without_cookie(mut self) -> Self {
        self.cookie = None;
        self
    }

    /// Also reads the token from the `authorization` query parameter, after the header and
    /// before the cookie. Off by default: URLs end up in logs and browser history, so use it
    /// only for clients that can send neither a header nor a cookie.
    pub fn allow_query_token(mut self) -> Self {
        self.query = true;
        self
    }

    /// Lets requests without a token subscribe to any topic, for public events only. A request
    /// with a token is still checked, and refused if its token is not valid.
    pub fn allow_anonymous_subscribe(mut self) -> Self {
        self.anonymous_subscribe = true;
        self
    }

    /// Clock skew allowed when checking `exp` and `nbf` (default none; whole seconds). A stream
    /// ends this long after its token's `exp`.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Origins whose pages may publish with the token in the cookie, besides the hub's own
    /// (`https://app.example.com`, scheme and host and port as a browser's `Origin` header has
    /// them; `*` for any). A browser sends cookies with requests that other sites' pages make, so a
    /// publish authorized by the cookie must show where it comes from: its `Origin` (or
    /// `Referer`) must be the hub's own origin or one of these, or it is refused with 403
    /// (Mercure, "Security Considerations"). Publishes with the token in the header or the query
    /// are not affected.
    pub fn publish_origins<I, S>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.publish_origins = origins
            .into_iter()
            .map(|origin| origin.into().trim_end_matches('/').to_owned())
            .collect();
        self
    }

    /// The authorizer.
    pub fn build(self) -> JwtAuthorizer {
        JwtAuthorizer {
            publisher: Verifier::new(self.publisher, self.leeway),
            subscriber: Verifier::new(self.subscriber, self.leeway),
            sources: Sources {
                cookie: self.cookie,
                query: self.query,
            },
            anonymous_subscribe: self.anonymous_subscribe,
            publish_origins: self.publish_origins,
        }
    }
}

fn invalid_token(reason: impl Into<std::borrow::Cow<'static, str>>) -> Denied {
    Denied::unauthorized(reason)
        .with_challenge(HeaderValue::from_static("Bearer error=\"invalid_token\""))
}
