//! The short replies of the endpoints: plain-text refusals and the body kinds the layer answers
//! with.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use super::stream::SseStream;

/// A body the layer itself answers with.
pub(crate) enum Reply {
    Events(Box<SseStream>),
    Full(Bytes),
}

/// A plain-text refusal; the reason ends with a newline so it prints cleanly in a terminal.
pub(crate) fn refuse(status: StatusCode, reason: impl std::fmt::Display) -> Response<Reply> {
    text(status, format!("{reason}\n"))
}

/// The refusal an authorizer decided on, with its challenge if it gave one.
pub(crate) fn denied(denied: &crate::auth::Denied) -> Response<Reply> {
    let mut response = refuse(denied.status(), denied.reason());
    if let Some(challenge) = denied.challenge() {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge.clone());
    }
    response
}

/// A plain-text response, sent as it is.
pub(crate) fn text(status: StatusCode, message: impl Into<String>) -> Response<Reply> {
    let message = message.into();
    let mut response = Response::new(Reply::Full(Bytes::from(message)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
