//! The hub's refusals as gRPC statuses, with the same reasons the HTTP endpoints send.

use tonic::Status;
use tonic::metadata::{MetadataMap, MetadataValue};

use crate::auth::Denied;
use crate::broker::BrokerError;
use crate::endpoint::admit::{PublishRefused, Refused};

/// An authorizer's refusal: 401 is `UNAUTHENTICATED`, with its challenge (if any) as
/// `www-authenticate` metadata; anything else `PERMISSION_DENIED`.
pub(super) fn denied(denied: &Denied) -> Status {
    if denied.status() != http::StatusCode::UNAUTHORIZED {
        return Status::permission_denied(denied.reason());
    }
    let mut metadata = MetadataMap::new();
    if let Some(challenge) = denied
        .challenge()
        .and_then(|value| value.to_str().ok())
        .and_then(|value| MetadataValue::try_from(value).ok())
    {
        metadata.insert("www-authenticate", challenge);
    }
    Status::with_metadata(tonic::Code::Unauthenticated, denied.reason(), metadata)
}

/// A subscribe the hub refused after reading it.
pub(super) fn subscribe_refused(refused: &Refused) -> Status {
    match refused {
        Refused::Denied(denial) => denied(denial),
        // The client's own quota, not the server's state: it can close a stream of its own.
        Refused::ClientLimit(_) => Status::resource_exhausted(refused.to_string()),
        Refused::Broker(BrokerError::Unsupported(_)) => Status::unimplemented(refused.to_string()),
        Refused::ShuttingDown | Refused::Full(_) | Refused::ReplayLimit(_) | Refused::Broker(_) => {
            Status::unavailable(refused.to_string())
        }
    }
}

/// A publish the hub refused, or could not store.
pub(super) fn publish_refused(refused: &PublishRefused) -> Status {
    let reason = refused.reason("gRPC");
    match refused {
        PublishRefused::Disabled => Status::permission_denied(reason),
        PublishRefused::TooCostly(_) => Status::resource_exhausted(reason),
        PublishRefused::Denied(denial) => denied(denial),
        PublishRefused::NoTopics => Status::invalid_argument(reason),
        PublishRefused::DuplicateId(_) => Status::already_exists(reason),
        PublishRefused::Broker(BrokerError::Unsupported(_)) => Status::unimplemented(reason),
        PublishRefused::Broker(_) => Status::unavailable(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_401_is_unauthenticated_with_its_challenge_and_a_403_permission_denied() {
        let status = denied(
            &Denied::unauthorized("log in first")
                .with_challenge(http::HeaderValue::from_static("Bearer realm=\"events\"")),
        );
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert_eq!(status.message(), "log in first");
        assert_eq!(
            status
                .metadata()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer realm=\"events\"")
        );
        let status = denied(&Denied::forbidden("not yours"));
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert_eq!(status.message(), "not yours");
    }
}
