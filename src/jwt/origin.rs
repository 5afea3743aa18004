//! The origin check for publishes authorized by a cookie (Mercure, "Security Considerations"):
//! a browser attaches cookies to requests that other sites' pages make, so such a publish must
//! show, by its `Origin` or `Referer` header, that it comes from the hub's own origin or one the
//! app allowed.

use http::header::{HOST, ORIGIN, REFERER};
use http::request::Parts;

use crate::auth::Denied;

/// Lets a cookie-authorized publish through when its `Origin` (else its `Referer`) is the hub's
/// own origin (same host and port as the request) or one of `allowed` (`*` allows any).
///
/// # Errors
///
/// 403 when neither header is there, or the origin is another site's.
pub(crate) fn check(parts: &Parts, allowed: &[String]) -> Result<(), Denied> {
    let header = |name| {
        parts
            .headers
            .get(name)
            .and_then(|value: &http::HeaderValue| value.to_str().ok())
    };
    let origin = match (header(ORIGIN), header(REFERER)) {
        (Some(origin), _) => origin.to_owned(),
        (None, Some(referer)) => origin_of(referer).ok_or_else(|| {
            Denied::forbidden("the Referer of a publish with a cookie token is not a URL")
        })?,
        (None, None) => {
            return Err(Denied::forbidden(
                "a publish with the token in a cookie must carry an Origin or Referer header \
                 (protection against cross-site requests); send the token in the \
                 Authorization header instead",
            ));
        }
    };
    if allowed.iter().any(|a| a == "*" || *a == origin) || is_own(parts, &origin) {
        return Ok(());
    }
    Err(Denied::forbidden(format!(
        "a publish with the token in a cookie from origin {origin:?} is not allowed: only the \
         hub's own origin and those given to JwtAuthorizerBuilder::publish_origins may"
    )))
}

/// `scheme://authority` of a URL.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    (!scheme.is_empty() && !authority.is_empty()).then(|| format!("{scheme}://{authority}"))
}

/// Whether `origin`'s host and port are the request's own (its `Host`, or the URI's authority
/// under HTTP/2). The scheme is not compared: behind a proxy that ends TLS the hub cannot know
/// it, and a page of the same host and port is the same site.
fn is_own(parts: &Parts, origin: &str) -> bool {
    let own = parts
        .headers
        .get(HOST)
        .and_then(|host| host.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()));
    let Some(own) = own else { return false };
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(own))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut request = http::Request::post("/.well-known/mercure");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).expect("valid request").into_parts().0
    }

    #[test]
    fn the_hubs_own_origin_passes_and_others_do_not() {
        let host = ("host", "hub.example.com:8443");
        assert!(
            check(
                &parts(&[host, ("origin", "https://hub.example.com:8443")]),
                &[]
            )
            .is_ok()
        );
        assert!(check(&parts(&[host, ("origin", "https://evil.example")]), &[]).is_err());
        assert!(check(&parts(&[host, ("origin", "null")]), &[]).is_err());
        assert!(
            check(&parts(&[host]), &[]).is_err(),
            "no header, no publish"
        );
    }

    #[test]
    fn the_referer_stands_in_for_a_missing_origin() {
        let host = ("host", "hub.example.com");
        let own = ("referer", "https://hub.example.com/books/1?x=y");
        assert!(check(&parts(&[host, own]), &[]).is_ok());
        let other = ("referer", "https://evil.example/page");
        assert!(check(&parts(&[host, other]), &[]).is_err());
    }

    #[test]
    fn allowed_origins_and_the_wildcard_pass() {
        let request = parts(&[("host", "hub"), ("origin", "https://app.example.com")]);
        assert!(check(&request, &["https://app.example.com".to_owned()]).is_ok());
        assert!(check(&request, &["*".to_owned()]).is_ok());
        assert!(check(&request, &["https://other.example.com".to_owned()]).is_err());
    }
}
