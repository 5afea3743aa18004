//! Who may publish and subscribe: the [`Authorizer`] hook.
//!
//! An authorizer sees the request's parts (method, URI, headers with cookies, and the extensions
//! that the app's own auth middleware put there) together with the topics asked for, and answers
//! asynchronously with [`Allowed`] or a [`Denied`] that becomes a 401 or 403. [`Allowed`] can say
//! more than yes: which private events a subscriber may receive, and when its stream must end
//! (its credentials' expiry).
//!
//! Without an authorizer, anyone may subscribe and nobody may publish over HTTP; the builder's
//! [`allow_anonymous_publish`](crate::HubBuilder::allow_anonymous_publish) is the explicit opt-in
//! for demos. App code publishes through a [`Publisher`](crate::Publisher), which needs no
//! authorization.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::time::SystemTime;

use http::request::Parts;
use http::{HeaderValue, StatusCode};

use crate::broker::{BoxFuture, Grant};
use crate::event::Topic;

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Access {
    /// Open an event stream on the topics.
    Subscribe,
    /// Publish an event to the topics.
    Publish,
}

/// A yes from an [`Authorizer`], with what it allows beyond the topics asked for.
///
/// The default allows the request and nothing more: a subscriber receives public events only and
/// its stream lasts as long as the client stays. `()` converts into it, so a closure given to
/// [`authorize_fn`] may answer `Ok(())`.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tower_sse_pubsub::{Allowed, Grant, Topic};
///
/// // A subscriber whose token lets it see private events on its own topic for an hour.
/// let expires = SystemTime::now() + Duration::from_secs(3600);
/// let allowed = Allowed::new()
///     .with_grant(Grant::Topics(vec![Topic::new("users/ada")?]))
///     .until(expires);
/// assert_eq!(allowed.deadline(), Some(expires));
/// # Ok::<(), tower_sse_pubsub::TopicError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
#[must_use]
pub struct Allowed {
    grant: Grant,
    until: Option<SystemTime>,
}

impl Allowed {
    /// Allowed, public events only, no deadline.
    pub fn new() -> Self {
        Self::default()
    }

    /// The private events a subscriber may receive (ignored for a publish).
    pub fn with_grant(mut self, grant: Grant) -> Self {
        self.grant = grant;
        self
    }

    /// Ends the subscriber's stream at `deadline`, e.g. when its token expires: the stream
    /// closes with a comment telling the client to reconnect with fresh credentials. A deadline
    /// already past refuses the subscribe with 401. Ignored for a publish.
    pub fn until(mut self, deadline: SystemTime) -> Self {
        self.until = Some(deadline);
        self
    }

    /// The private events granted.
    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    /// When the stream must end, if ever.
    pub fn deadline(&self) -> Option<SystemTime> {
        self.until
    }
}

impl From<()> for Allowed {
    fn from((): ()) -> Self {
        Self::default()
    }
}

/// A refusal, with the status and the reason the client receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    status: StatusCode,
    reason: Cow<'static, str>,
    challenge: Option<HeaderValue>,
}

impl Denied {
    /// 403 Forbidden: the client is known but may not do this.
    pub fn forbidden(reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            reason: reason.into(),
            challenge: None,
        }
    }

    /// 401 Unauthorized: the client must authenticate first. HTTP requires a 401 to say how,
    /// with a `WWW-Authenticate` challenge: add one with [`Denied::with_challenge`] (a 401
    /// without one is sent as it is).
    pub fn unauthorized(reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            reason: reason.into(),
            challenge: None,
        }
    }

    /// Sends `challenge` as the `WWW-Authenticate` header, e.g. `Bearer realm="events"`.
    ///
    /// ```
    /// use http::HeaderValue;
    /// use tower_sse_pubsub::Denied;
    ///
    /// let denied = Denied::unauthorized("log in first")
    ///     .with_challenge(HeaderValue::from_static("Bearer realm=\"events\""));
    /// assert_eq!(denied.challenge().map(|c| c.as_bytes()), Some(&b"Bearer realm=\"events\""[..]));
    /// ```
    pub fn with_challenge(mut self, challenge: HeaderValue) -> Self {
        self.challenge = Some(challenge);
        self
    }

    /// The `WWW-Authenticate` challenge, if any.
    pub fn challenge(&self) -> Option<&HeaderValue> {
        self.challenge.as_ref()
    }

    /// The HTTP status the client receives.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The reason the client receives as a plain-text body.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason, self.status)
    }
}

impl std::error::Error for Denied {}

/// Decides whether a request may subscribe to or publish on its topics.
///
/// It decides for the HTTP endpoints, and with feature `grpc` for the gRPC service's calls too,
/// which it sees as `POST` requests to the call's path with the call's metadata as headers (see
/// the `grpc` module).
///
/// Implement it for a type of your own, or wrap a closure with [`authorize_fn`]. A type of your
/// own can hold what the decision needs (a key, a client, a table of rights):
///
/// ```
/// use std::collections::HashMap;
/// use http::request::Parts;
/// use tower_sse_pubsub::{Access, Allowed, Authorizer, BoxFuture, Denied, Hub, Topic};
///
/// /// Each API key may publish to the topics under its own prefix; anyone may subscribe.
/// struct ApiKeys {
///     prefixes: HashMap<String, String>,
/// }
///
/// impl Authorizer for ApiKeys {
///     fn authorize<'a>(
///         &'a self,
///         parts: &'a Parts,
///         access: Access,
///         topics: &'a [Topic],
///     ) -> BoxFuture<'a, Result<Allowed, Denied>> {
///         Box::pin(async move {
///             if access == Access::Subscribe {
///                 return Ok(Allowed::new());
///             }
///             let key = parts.headers.get("x-api-key").and_then(|v| v.to_str().ok());
///             let Some(prefix) = key.and_then(|key| self.prefixes.get(key)) else {
///                 return Err(Denied::forbidden("a valid x-api-key is required to publish"));
///             };
///             match topics.iter().find(|t| !t.as_str().starts_with(prefix.as_str())) {
///                 Some(topic) => Err(Denied::forbidden(format!("this key may not publish to {topic}"))),
///                 None => Ok(Allowed::new()),
///             }
///         })
///     }
/// }
///
/// let keys = ApiKeys { prefixes: HashMap::from([("k1".to_owned(), "shop/".to_owned())]) };
/// let hub = Hub::builder().authorizer(keys).build()?;
/// # drop(hub);
/// # Ok::<(), tower_sse_pubsub::BuildError>(())
/// ```
pub trait Authorizer: Send + Sync + 'static {
    /// Allows (`Ok`) or refuses (`Err`) `access` to `topics` for the request `parts`.
    fn authorize<'a>(
        &'a self,
        parts: &'a Parts,
        access: Access,
        topics: &'a [Topic],
    ) -> BoxFuture<'a, Result<Allowed, Denied>>;
}

/// An [`Authorizer`] from a closure; see [`authorize_fn`].
#[derive(Clone, Copy)]
pub struct AuthorizeFn<F>(F);

/// Makes an [`Authorizer`] of a closure that reads what it needs from the request synchronously
/// and returns a future with the verdict: `Ok(())`, `Ok(`[`Allowed`]`)` to grant private events
/// or set a deadline, or `Err(`[`Denied`]`)`.
///
/// ```
/// use http::HeaderValue;
/// use http::request::Parts;
/// use tower_sse_pubsub::{authorize_fn, Access, Denied, Hub, Topic};
///
/// /// Put into the request extensions by the app's own login middleware.
/// #[derive(Clone)]
/// struct User { admin: bool }
///
/// let hub = Hub::builder()
///     .authorizer(authorize_fn(|parts: &Parts, access: Access, _topics: &[Topic]| {
///         let user = parts.extensions.get::<User>().cloned();
///         async move {
///             match (access, user) {
///                 (Access::Subscribe, _) => Ok(()), // anyone may subscribe
///                 (Access::Publish, Some(User { admin: true })) => Ok(()),
///                 (Access::Publish, Some(_)) => Err(Denied::forbidden("only admins may publish")),
///                 (Access::Publish, None) => Err(Denied::unauthorized("log in first")
///                     .with_challenge(HeaderValue::from_static("Bearer"))),
///                 // `Access` may grow; refuse what this policy does not know.
///                 _ => Err(Denied::forbidden("not allowed")),
///             }
///         }
///     }))
///     .build()?;
/// # drop(hub);
/// # Ok::<(), tower_sse_pubsub::BuildError>(())
/// ```
///
/// The future must not borrow the request: copy what it needs out first, then return an
/// `async move` block. A named function works too, but in edition 2024 its `impl Future` return
/// type captures the argument lifetimes unless it says `+ use<>`:
///
/// ```
/// use std::future::Future;
/// use http::request::Parts;
/// use tower_sse_pubsub::{authorize_fn, Access, Denied, Topic};
///
/// fn policy(
///     parts: &Parts,
///     _access: Access,
///     _topics: &[Topic],
/// ) -> impl Future<Output = Result<(), Denied>> + Send + use<> {
///     let logged_in = parts.headers.contains_key("authorization");
///     async move {
///         if logged_in { Ok(()) } else { Err(Denied::forbidden("log in first")) }
///     }
/// }
///
/// let authorizer = authorize_fn(policy);
/// # drop(authorizer);
/// ```
pub fn authorize_fn<F, Fut, A>(f: F) -> AuthorizeFn<F>
where
    F: Fn(&Parts, Access, &[Topic]) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<A, Denied>> + Send + 'static,
    A: Into<Allowed>,
{
    AuthorizeFn(f)
}

impl<F, Fut, A> Authorizer for AuthorizeFn<F>
where
    F: Fn(&Parts, Access, &[Topic]) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<A, Denied>> + Send + 'static,
    A: Into<Allowed>,
{
    fn authorize<'a>(
        &'a self,
        parts: &'a Parts,
        access: Access,
        topics: &'a [Topic],
    ) -> BoxFuture<'a, Result<Allowed, Denied>> {
        let verdict = (self.0)(parts, access, topics);
        Box::pin(async move { verdict.await.map(Into::into) })
    }
}

impl<F> fmt::Debug for AuthorizeFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthorizeFn")
    }
}
