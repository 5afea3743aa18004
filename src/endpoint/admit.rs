//! What the hub checks before it lets a subscribe or a publish through, whichever transport
//! carried it: the HTTP endpoints and the gRPC service (feature `grpc`) call these same steps, so
//! the authorizer, the limits and the counters apply alike, and each transport only reads its
//! request and words its answer.
//!
//! A subscribe goes: shutdown check, subscriber slot (hub-wide and per client), authorizer,
//! replay permit, broker subscribe, shutdown check again; then it is counted as opened. A publish
//! goes: publishing allowed at all, cost limit, authorizer, broker publish.

use std::fmt;
use std::sync::Arc;

use http::request::Parts;

use super::Endpoints;
use super::clients::client_address;
use super::stream::{NoSlot, ReplayPermit, StreamAccount, SubscriberSlot};
use crate::auth::{Access, Allowed, Denied};
use crate::broker::{BrokerError, PublishRequest, Resume, Start, SubscribeRequest, Subscription};
use crate::event::{EventId, Topic};
use crate::selector::Selector;
use crate::stats::Refusal;

/// The resume point a client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ResumePoint {
    None,
    Id(EventId),
    /// Sent, but cannot be an id of ours (too long, control characters, not ASCII). Refusing it
    /// with 400 would end a browser's EventSource for good, so the stream opens as for an
    /// unknown id: with the resync notice, then everything retained.
    Unusable,
    /// Everything retained (Mercure's reserved `earliest`).
    #[cfg_attr(not(feature = "mercure"), allow(dead_code))]
    Earliest,
}

impl ResumePoint {
    pub(crate) fn id(&self) -> Option<&EventId> {
        match self {
            Self::Id(id) => Some(id),
            _ => None,
        }
    }
}

/// The resume id a `Last-Event-ID` header carries: `None` when there is none (or it is
/// empty), else the id, or [`ResumePoint::Unusable`] when it cannot be one of ours. A browser's
/// EventSource sends the id it last saw as UTF-8, so any UTF-8 is read, not only ASCII.
pub(crate) fn last_event_id(parts: &Parts, read: impl FnOnce(&str) -> ResumePoint) -> ResumePoint {
    match parts.headers.get("last-event-id") {
        None => ResumePoint::None,
        Some(value) if value.is_empty() => ResumePoint::None,
        Some(value) => std::str::from_utf8(value.as_bytes()).map_or(ResumePoint::Unusable, read),
    }
}

/// Adds the topic `name` to `topics` unless it is there already, refusing an invalid name and
/// more than `max` topics, with the messages every transport sends.
pub(crate) fn add_topic(topics: &mut Vec<Topic>, name: &str, max: usize) -> Result<(), String> {
    let topic = Topic::new(name).map_err(|e| format!("invalid topic {name:?}: {e}"))?;
    if !topics.contains(&topic) {
        // Refused as soon as the limit is passed, so a huge request costs no more than that.
        if topics.len() == max {
            return Err(format!("too many topics: at most {max} per request"));
        }
        topics.push(topic);
    }
    Ok(())
}

/// Who decides whether a subscribe may go through.
#[derive(Debug)]
pub(crate) enum Decider {
    /// The hub's authorizer, if it has one.
    Authorizer,
    /// Nobody: the app chose the topics itself.
    App,
    /// The endpoint already did (Mercure's, with its token rules): this is what it allowed.
    #[cfg_attr(not(feature = "mercure"), allow(dead_code))]
    Decided(Allowed),
}

/// What to do when an admitted stream ends (say, tell others the subscription is gone).
pub(crate) struct OnClose(pub(crate) Box<dyn FnOnce() + Send>);

impl fmt::Debug for OnClose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OnClose")
    }
}

/// A subscribe as the hub sees it, read from whichever request carried it.
#[derive(Debug)]
pub(crate) struct Ask {
    pub(crate) topics: Vec<Topic>,
    /// Topic patterns (Mercure's `*` and URI templates).
    pub(crate) patterns: Vec<Selector>,
    pub(crate) after: ResumePoint,
    pub(crate) decider: Decider,
    /// Whether the stream counts in the hub's stats (not a `HEAD` probe's).
    pub(crate) counted: bool,
    /// Run when the subscription ends, if it was made.
    pub(crate) on_close: Option<OnClose>,
}

/// A stream the hub let through: its account (slot, counts), its subscription, the replay
/// permit it holds while it catches up, and how its resume point was placed (the point itself
/// is in the account).
pub(crate) struct Admitted {
    pub(crate) account: StreamAccount,
    pub(crate) subscription: Subscription,
    pub(crate) replay: Option<ReplayPermit>,
    pub(crate) resume: Resume,
}

/// Why a subscribe was refused after its request was read.
#[derive(Debug)]
pub(crate) enum Refused {
    ShuttingDown,
    /// Every subscriber slot is taken; the reason names the limit.
    Full(String),
    /// The client has this many streams open, as many as it may.
    ClientLimit(usize),
    Denied(Denied),
    /// This many streams are replaying already, as many as may.
    ReplayLimit(usize),
    Broker(BrokerError),
}

impl Refused {
    /// The reason, as the hub's counters file it.
    pub(crate) fn refusal(&self) -> Refusal {
        match self {
            Self::ShuttingDown => Refusal::ShuttingDown,
            Self::Full(_) => Refusal::Full,
            Self::ClientLimit(_) => Refusal::ClientLimit,
            Self::Denied(_) => Refusal::Denied,
            Self::ReplayLimit(_) => Refusal::ReplayLimit,
            Self::Broker(_) => Refusal::BrokerUnavailable,
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ShuttingDown => f.write_str("the server is shutting down; reconnect"),
            Self::Full(reason) => f.write_str(reason),
            Self::ClientLimit(max) => write!(
                f,
                "this client already has {max} event streams open; close one or retry later"
            ),
            Self::Denied(denied) => f.write_str(denied.reason()),
            Self::ReplayLimit(max) => write!(
                f,
                "{max} streams are replaying history already; reconnect later to resume"
            ),
            Self::Broker(error) => write!(f, "{error}"),
        }
    }
}

/// The monotonic instant of a wall-clock deadline (an [`Allowed::until`]), or `None` when it has
/// passed.
fn until(deadline: std::time::SystemTime) -> Option<tokio::time::Instant> {
    let left = deadline.duration_since(std::time::SystemTime::now()).ok()?;
    (!left.is_zero()).then(|| tokio::time::Instant::now() + left)
}

/// Lets a subscribe through, or says why not. The caller has read `ask` from its request (and
/// counted a malformed one); a refusal is counted by the caller too, which knows how it answered.
pub(crate) async fn subscribe(
    shared: &Arc<Endpoints>,
    parts: &Parts,
    ask: Ask,
) -> Result<Admitted, Refused> {
    if shared.is_shut_down() {
        return Err(Refused::ShuttingDown);
    }
    let client = client_address(parts, shared.config.client_header.as_ref());
    let slot = match SubscriberSlot::acquire(shared, client) {
        Ok(slot) => slot,
        Err(NoSlot::Full) => return Err(Refused::Full(shared.full_reason())),
        Err(NoSlot::ClientLimit(max)) => return Err(Refused::ClientLimit(max)),
    };
    let allowed = match (ask.decider, &shared.authorizer) {
        (Decider::Decided(allowed), _) => allowed,
        (Decider::Authorizer, Some(authorizer)) => authorizer
            .authorize(parts, Access::Subscribe, &ask.topics)
            .await
            .map_err(Refused::Denied)?,
        _ => Allowed::new(),
    };
    let deadline = match allowed.deadline() {
        None => None,
        Some(deadline) => Some(until(deadline).ok_or_else(|| {
            Refused::Denied(
                Denied::unauthorized("the credentials have expired; renew them")
                    .with_challenge(http::HeaderValue::from_static("Bearer")),
            )
        })?),
    };
    let start = match &ask.after {
        ResumePoint::None => Start::Live,
        ResumePoint::Id(id) => Start::After(id.clone()),
        ResumePoint::Unusable | ResumePoint::Earliest => Start::Earliest,
    };
    let replay = match start {
        Start::Live => None,
        _ => Some(
            ReplayPermit::acquire(shared).ok_or(Refused::ReplayLimit(shared.config.max_replays))?,
        ),
    };
    let mut request = SubscribeRequest::new(ask.topics.iter().cloned())
        .select(ask.patterns.iter().cloned())
        .start(start)
        .grant(allowed.grant().clone())
        .replay_budget(shared.config.replay_budget);
    if let Some(deadline) = deadline {
        request = request.deadline(deadline);
    }
    let mut subscription = shared
        .broker
        .subscribe(&request)
        .await
        .map_err(Refused::Broker)?;
    if let Some(OnClose(on_close)) = ask.on_close {
        subscription = subscription.on_drop(on_close);
    }
    // Shutdown may have begun while the authorizer or the broker was working.
    if shared.is_shut_down() {
        return Err(Refused::ShuttingDown);
    }

    let resume = match ask.after {
        ResumePoint::Unusable => Resume::Unknown,
        _ => subscription.resume().clone(),
    };
    if ask.counted {
        shared.counters.stream_opened();
        if ask.after != ResumePoint::None {
            shared.counters.resumed(&resume);
        }
        // Every transport opens a stream with a gap with its resync notice.
        if resume.is_gap() {
            shared.counters.resync_sent();
        }
    }
    // One span per stream, so its events (opened, resync, closed) can be told apart from other
    // streams'; a disabled span costs nothing.
    let span = if ask.counted {
        tracing::debug_span!(
            target: "tower_sse_pubsub",
            "sse_stream",
            topics = ?ask.topics.iter().map(Topic::as_str).collect::<Vec<_>>(),
            patterns = ?ask.patterns.iter().map(Selector::as_str).collect::<Vec<_>>(),
            client = ?client,
        )
    } else {
        tracing::Span::none()
    };
    if ask.counted {
        span.in_scope(|| {
            tracing::debug!(
                target: "tower_sse_pubsub",
                resume = resume.as_str(),
                "stream opened"
            );
        });
    }
    shared.start_tickers();
    let topics =
        (ask.counted && shared.topic_streams.is_some()).then(|| ask.topics.into_boxed_slice());
    let account = StreamAccount::new(slot, topics, ask.counted, ask.after.id(), span);
    Ok(Admitted {
        account,
        subscription,
        replay,
        resume,
    })
}

/// Why a publish was refused after its request was read, or failed.
#[derive(Debug)]
pub(crate) enum PublishRefused {
    /// No authorizer, and anonymous publishing not allowed.
    Disabled,
    /// Costs more than the hub allows; the reason says by how much.
    TooCostly(String),
    Denied(Denied),
    /// The broker refused a request without topics.
    NoTopics,
    /// The broker refused the chosen id: it is taken.
    DuplicateId(BrokerError),
    /// The broker could not store the event: a failure, not a refusal.
    Broker(BrokerError),
}

impl PublishRefused {
    /// The reason to send, for a request that came over `transport` ("HTTP", "gRPC").
    pub(crate) fn reason(&self, transport: &str) -> String {
        match self {
            Self::Disabled => format!(
                "publishing over {transport} is disabled: give the hub an authorizer \
                 (HubBuilder::authorizer) or allow anonymous publishing \
                 (HubBuilder::allow_anonymous_publish)"
            ),
            Self::TooCostly(reason) => reason.clone(),
            Self::Denied(denied) => denied.reason().to_owned(),
            Self::NoTopics => BrokerError::NoTopics.to_string(),
            Self::DuplicateId(error) | Self::Broker(error) => error.to_string(),
        }
    }
}

/// Whether anybody may publish through this hub's endpoints: checked first, before a request
/// body is read.
pub(crate) fn publishing_enabled(shared: &Endpoints) -> Result<(), PublishRefused> {
    if shared.authorizer.is_none() && !shared.config.anonymous_publish {
        return Err(PublishRefused::Disabled);
    }
    Ok(())
}

/// Checks `request`'s cost and the authorizer, then publishes it. The caller has checked
/// [`publishing_enabled`] first and read `request` within the hub's limits.
pub(crate) async fn publish(
    shared: &Endpoints,
    parts: &Parts,
    request: &PublishRequest,
) -> Result<EventId, PublishRefused> {
    publishing_enabled(shared)?;
    check_cost(shared, request)?;
    if let Some(authorizer) = &shared.authorizer {
        // What an authorizer allows beyond the yes (a grant, a deadline) concerns streams only.
        let _publish: Allowed = authorizer
            .authorize(parts, Access::Publish, request.topics())
            .await
            .map_err(PublishRefused::Denied)?;
    }
    store(shared, request).await
}

/// Refuses a publish that would cost more than the hub allows: its encoded size (each line of
/// data gets its own `data: `), once per topic.
pub(crate) fn check_cost(
    shared: &Endpoints,
    request: &PublishRequest,
) -> Result<(), PublishRefused> {
    let size = request.event().fields_len();
    let topics = request.topics().len();
    let cost = size.saturating_mul(topics);
    let max = shared.config.max_publish_cost;
    if cost > max {
        return Err(PublishRefused::TooCostly(format!(
            "this publish costs {cost} bytes ({size} bytes encoded, to {topics} {}), over the \
             limit of {max}: send less data or fewer topics per request",
            if topics == 1 { "topic" } else { "topics" },
        )));
    }
    Ok(())
}

/// Publishes an authorized `request` through the broker.
pub(crate) async fn store(
    shared: &Endpoints,
    request: &PublishRequest,
) -> Result<EventId, PublishRefused> {
    shared
        .broker
        .publish(request)
        .await
        .map_err(|error| match error {
            BrokerError::NoTopics => PublishRefused::NoTopics,
            error @ BrokerError::DuplicateId(_) => PublishRefused::DuplicateId(error),
            error => PublishRefused::Broker(error),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_deduplicated_validated_and_limited() {
        let mut topics = Vec::new();
        add_topic(&mut topics, "a", 2).expect("valid");
        add_topic(&mut topics, "a", 2).expect("a repeat is ignored");
        add_topic(&mut topics, "b", 2).expect("valid");
        let error = add_topic(&mut topics, "c", 2).expect_err("a third is too many");
        assert_eq!(error, "too many topics: at most 2 per request");
        let error = add_topic(&mut topics, "", 2).expect_err("empty");
        assert!(error.starts_with("invalid topic \"\": "), "{error}");
        assert_eq!(topics.len(), 2);
    }
}
