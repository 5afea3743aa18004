//! Where a request carries its token: the `Authorization` header, the `authorization` query
//! parameter, or a cookie, in that order of precedence (Mercure, "Authorization").

use http::header::{AUTHORIZATION, COOKIE};
use http::request::Parts;

use crate::endpoint::form;

/// Which places the authorizer reads a token from, besides the `Authorization` header.
#[derive(Debug, Clone)]
pub(crate) struct Sources {
    /// The cookie that may carry the token, if any.
    pub(crate) cookie: Option<String>,
    /// Whether the `authorization` query parameter may carry it.
    pub(crate) query: bool,
}

/// Where a request carried its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Header,
    Query,
    /// A cookie, which a browser sends on its own: a request made by another site's page
    /// carries it too (cross-site request forgery), so what it allows to change needs a check of
    /// the request's origin.
    Cookie,
}

/// The token a request presents, if any.
///
/// # Errors
///
/// A reason for the client when the request carries an `Authorization` header that is not a
/// bearer token: it was meant as credentials, and other sources must not be tried in its place.
#[cfg(test)]
pub(crate) fn find(parts: &Parts, sources: &Sources) -> Result<Option<String>, &'static str> {
    Ok(locate(parts, sources)?.map(|(token, _)| token))
}

/// The token a request presents and where, if any; see [`find`].
pub(crate) fn locate(
    parts: &Parts,
    sources: &Sources,
) -> Result<Option<(String, Source)>, &'static str> {
    if let Some(header) = parts.headers.get(AUTHORIZATION) {
        let bearer = header
            .to_str()
            .ok()
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|token| !token.is_empty());
        return match bearer {
            Some(token) => Ok(Some((token.to_owned(), Source::Header))),
            None => Err("the Authorization header must be `Bearer <token>`"),
        };
    }
    if sources.query
        && let Some(query) = parts.uri.query()
        && let Some(token) = form::pairs(query.as_bytes())
            .filter_map(Result::ok)
            .find_map(|(name, value)| (name == "authorization").then_some(value))
    {
        return Ok(Some((token, Source::Query)));
    }
    if let Some(name) = &sources.cookie {
        return Ok(cookie(parts, name).map(|token| (token, Source::Cookie)));
    }
    Ok(None)
}

/// The value of the cookie `name` (the first, if the client sent several).
fn cookie(parts: &Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|header| header.to_str().ok())
        .flat_map(|header| header.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then(|| value.trim_matches('"').to_owned())
        })
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut request = http::Request::get(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).expect("valid request").into_parts().0
    }

    fn all_sources() -> Sources {
        Sources {
            cookie: Some("mercureAuthorization".to_owned()),
            query: true,
        }
    }

    #[test]
    fn the_header_wins_over_the_query_and_the_cookie() {
        let p = parts(
            "/e?authorization=from-query",
            &[
                ("authorization", "Bearer from-header"),
                ("cookie", "mercureAuthorization=from-cookie"),
            ],
        );
        assert_eq!(find(&p, &all_sources()), Ok(Some("from-header".to_owned())));
    }

    #[test]
    fn the_query_wins_over_the_cookie_when_allowed() {
        let p = parts(
            "/e?topic=a&authorization=from%2Dquery",
            &[("cookie", "mercureAuthorization=from-cookie")],
        );
        assert_eq!(find(&p, &all_sources()), Ok(Some("from-query".to_owned())));
        let no_query = Sources {
            query: false,
            ..all_sources()
        };
        assert_eq!(find(&p, &no_query), Ok(Some("from-cookie".to_owned())));
    }

    #[test]
    fn the_cookie_is_found_among_others_and_across_headers() {
        let p = parts(
            "/e",
            &[
                ("cookie", "theme=dark"),
                ("cookie", "a=b; mercureAuthorization=tok; c=d"),
            ],
        );
        assert_eq!(find(&p, &all_sources()), Ok(Some("tok".to_owned())));
        let other = Sources {
            cookie: Some("other".to_owned()),
            query: false,
        };
        assert_eq!(find(&p, &other), Ok(None));
    }

    #[test]
    fn a_header_that_is_not_a_bearer_token_is_an_error_not_a_fallback() {
        for value in ["Basic abc", "Bearer", "Bearer ", "token"] {
            let p = parts(
                "/e",
                &[
                    ("authorization", value),
                    ("cookie", "mercureAuthorization=tok"),
                ],
            );
            assert!(find(&p, &all_sources()).is_err(), "{value:?}");
        }
        let p = parts("/e", &[("authorization", "bearer lower-case-scheme")]);
        assert_eq!(
            find(&p, &all_sources()),
            Ok(Some("lower-case-scheme".to_owned()))
        );
    }

    #[test]
    fn no_token_anywhere_is_none() {
        assert_eq!(find(&parts("/e?topic=a", &[]), &all_sources()), Ok(None));
    }
}
