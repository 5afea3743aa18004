//! Who is calling: the login middleware that puts a [`User`] into the request extensions, the
//! extractors handlers use to require one, and the hub's authorizer, which reads the same
//! [`User`].
//!
//! A request is logged in by a `session=<name>` cookie (what a browser's `EventSource` sends) or
//! an `Authorization: Bearer <name>` header (what scripts send). The credential is the user's
//! name: a stand-in for a real session store or token check, which would look the credential up
//! or verify its signature here, in one place, and nowhere else.

use std::future::{Ready, ready};

use axum::extract::{FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::{AUTHORIZATION, COOKIE, WWW_AUTHENTICATE};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode};
use tower_sse_pubsub::{Access, Denied, Topic};

use crate::state::AppState;

/// The name of the session cookie.
pub const SESSION_COOKIE: &str = "session";

/// The topic every logged-in user may subscribe to: new and shipped orders.
pub const ORDERS_TOPIC: &str = "orders";

/// Topics under this prefix are for admins only.
pub const ADMIN_TOPIC_PREFIX: &str = "admin/";

/// The challenge every 401 carries, as HTTP asks: how to authenticate.
const CHALLENGE: &str = "Bearer realm=\"orders\"";

/// Longest user name accepted.
const MAX_NAME_LEN: usize = 64;

/// The logged-in user, put into the request extensions by [`authenticate`]. Absent when the
/// request carries no valid credential.
///
/// Handlers take it as an extractor to require a login (401 otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user's name.
    pub name: String,
    /// Whether the user may publish over HTTP, ship orders and read `admin/*` topics.
    pub admin: bool,
}

/// Login middleware, for `axum::middleware::from_fn_with_state`: puts the caller's [`User`]
/// into the request extensions when it presents a valid credential, and passes every request on.
///
/// It refuses nothing itself: each route, and the hub's authorizer, decides what an anonymous
/// caller may do.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    // Whatever a client may have smuggled in cannot arrive as an extension, but a layer placed
    // outside this one could have set one; only this middleware decides who is logged in.
    request.extensions_mut().remove::<User>();
    if let Some(name) = credential(request.headers()) {
        let admin = state.config().admins.contains(name);
        let user = User {
            name: name.to_owned(),
            admin,
        };
        request.extensions_mut().insert(user);
    }
    next.run(request).await
}

/// The name in the `Authorization: Bearer` header, else in the session cookie, if valid.
fn credential(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let cookie = || {
        headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == SESSION_COOKIE)
            .map(|(_, value)| value)
    };
    bearer
        .or_else(cookie)
        .map(str::trim)
        .filter(|name| is_valid_name(name))
}

fn is_valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Extracting a [`User`] requires a login.
impl<S: Send + Sync> FromRequestParts<S> for User {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<User>()
            .cloned()
            .ok_or(AuthRejection::NotLoggedIn)
    }
}

/// A logged-in admin; extracting it refuses anonymous callers with 401 and other users with 403.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin(pub User);

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let user = User::from_request_parts(parts, state).await?;
        if user.admin {
            Ok(Admin(user))
        } else {
            Err(AuthRejection::NotAdmin)
        }
    }
}

/// Why a route refused a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthRejection {
    /// No valid credential: 401 with a `WWW-Authenticate` challenge.
    NotLoggedIn,
    /// Logged in, but not an admin: 403.
    NotAdmin,
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        match self {
            Self::NotLoggedIn => (
                StatusCode::UNAUTHORIZED,
                [(WWW_AUTHENTICATE, HeaderValue::from_static(CHALLENGE))],
                "log in first: send a session cookie or an Authorization: Bearer header",
            )
                .into_response(),
            Self::NotAdmin => (StatusCode::FORBIDDEN, "only admins may do this").into_response(),
        }
    }
}

/// The hub's authorizer (wrapped with `authorize_fn`): the same rules as the routes, read from
/// the [`User`] that [`authenticate`] put into the request extensions.
///
/// * subscribing to [`ORDERS_TOPIC`] needs a login;
/// * subscribing to `admin/*` topics needs an admin;
/// * other topics do not exist, for anyone;
/// * publishing over HTTP needs an admin (app code publishes through its `Publisher`, without
///   this check).
///
/// The verdict depends only on the request, so it is ready at once; an authorizer that looked
/// something up would return a future that owns what it needs.
pub fn authorize_hub_request(
    parts: &Parts,
    access: Access,
    topics: &[Topic],
) -> Ready<Result<(), Denied>> {
    let user = parts.extensions.get::<User>();
    ready(decide(user, access, topics))
}

fn decide(user: Option<&User>, access: Access, topics: &[Topic]) -> Result<(), Denied> {
    let needs_admin = match access {
        Access::Subscribe => {
            let mut needs_admin = false;
            for topic in topics {
                let topic = topic.as_str();
                if topic.starts_with(ADMIN_TOPIC_PREFIX) {
                    needs_admin = true;
                } else if topic != ORDERS_TOPIC {
                    return Err(Denied::forbidden(format!("no such topic: {topic}")));
                }
            }
            needs_admin
        }
        Access::Publish => true,
        // A kind of access added later is refused until these rules say otherwise.
        _ => return Err(Denied::forbidden("not allowed")),
    };
    match user {
        None => Err(Denied::unauthorized("log in first")
            .with_challenge(HeaderValue::from_static(CHALLENGE))),
        Some(user) if needs_admin && !user.admin => Err(Denied::forbidden(match access {
            Access::Publish => "only admins may publish",
            _ => "only admins may subscribe to admin/ topics",
        })),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    http::HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                )
            })
            .collect()
    }

    #[test]
    fn reads_the_bearer_header_before_the_cookie() {
        let both = headers(&[("authorization", "Bearer ada"), ("cookie", "session=bob")]);
        assert_eq!(credential(&both), Some("ada"));
        let cookie = headers(&[("cookie", "theme=dark; session=bob; lang=en")]);
        assert_eq!(credential(&cookie), Some("bob"));
    }

    #[test]
    fn ignores_malformed_credentials() {
        for (name, value) in [
            ("authorization", "Basic YWRhOg=="),
            ("authorization", "Bearer "),
            ("cookie", "session="),
            ("cookie", "session=a b"),
            ("cookie", "sessionid=ada"),
        ] {
            assert_eq!(
                credential(&headers(&[(name, value)])),
                None,
                "{name}: {value}"
            );
        }
    }

    #[test]
    fn one_unknown_topic_refuses_the_whole_subscription() {
        let topics = [
            Topic::new(ORDERS_TOPIC).expect("valid"),
            Topic::new("secrets").expect("valid"),
        ];
        let admin = User {
            name: "root".into(),
            admin: true,
        };
        let denied = decide(Some(&admin), Access::Subscribe, &topics).expect_err("refused");
        assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    }
}
