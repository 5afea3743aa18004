//! [`BrokerError`]: why a broker could not publish or subscribe.

use std::error::Error as StdError;
use std::fmt;

use crate::event::EventId;

/// Why a broker could not publish or subscribe.
#[derive(Debug)]
#[non_exhaustive]
pub enum BrokerError {
    /// The call named no topic; publish and subscribe need at least one.
    NoTopics,
    /// The backend cannot be reached or did not confirm the operation. A publish that was not
    /// confirmed may still have been stored (it timed out after reaching the backend), never the
    /// reverse. Retrying later may succeed (HTTP: 503). Build it with
    /// [`BrokerError::unavailable`].
    #[non_exhaustive]
    Unavailable {
        /// What failed, for people.
        reason: String,
        /// The underlying error, if any.
        source: Option<Box<dyn StdError + Send + Sync>>,
    },
    /// The broker does not do what the request asks (say, topic patterns); retrying will not
    /// help. Names what, for people.
    Unsupported(&'static str),
    /// The publish chose an id ([`PublishRequest::id`](crate::PublishRequest::id)) that the
    /// broker already gave an event, or that is shaped like the ids it makes; nothing was
    /// published. Choose a new id (HTTP: 409).
    DuplicateId(EventId),
}

impl BrokerError {
    /// An [`BrokerError::Unavailable`] with a reason and the error that caused it.
    pub fn unavailable(
        reason: impl Into<String>,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        Self::Unavailable {
            reason: reason.into(),
            source: Some(source.into()),
        }
    }
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoTopics => f.write_str("at least one topic is required"),
            Self::Unsupported(what) => write!(f, "this broker does not support {what}"),
            Self::DuplicateId(id) => write!(
                f,
                "event id {:?} is taken (already published, or shaped like the broker's own \
                 ids): choose a new id",
                id.as_str()
            ),
            // Not "nothing was stored": a publish that timed out after reaching the backend may
            // have been, and a failed subscribe stores nothing anyway.
            Self::Unavailable { reason, .. } => {
                write!(f, "broker unavailable: {reason}; retry later")
            }
        }
    }
}

impl StdError for BrokerError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::Unavailable {
                source: Some(source),
                ..
            } => Some(&**source as &(dyn StdError + 'static)),
            _ => None,
        }
    }
}
