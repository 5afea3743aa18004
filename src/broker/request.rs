//! What a [`Broker`](super::Broker) is asked to do: [`PublishRequest`] and [`SubscribeRequest`].
//!
//! Both are built with chainable methods and are `#[non_exhaustive]`, so new options (selectors
//! that are patterns, richer grants) arrive without breaking brokers or callers.

use std::fmt;
use std::sync::Arc;

use tokio::time::Instant;

use crate::event::{Event, EventId, Frame, Topic};
use crate::selector::Selector;

/// The longest idempotency key accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 256;

/// A key that makes a retried publish return the id of the first one instead of publishing
/// twice: 1..=256 bytes of visible ASCII.
///
/// ```
/// use tower_sse_pubsub::IdempotencyKey;
///
/// let key = IdempotencyKey::new("order-42-shipped")?;
/// assert_eq!(key.as_str(), "order-42-shipped");
/// assert!(IdempotencyKey::new("two words").is_err());
/// # Ok::<(), tower_sse_pubsub::IdempotencyKeyError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(Box<str>);

impl IdempotencyKey {
    /// Validates `key`.
    ///
    /// # Errors
    ///
    /// [`IdempotencyKeyError`] when `key` is empty, longer than [`MAX_IDEMPOTENCY_KEY_LEN`]
    /// bytes, or holds anything but visible ASCII (`!` to `~`).
    pub fn new(key: impl AsRef<str>) -> Result<Self, IdempotencyKeyError> {
        let key = key.as_ref();
        if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(IdempotencyKeyError::Length(key.len()));
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(IdempotencyKeyError::NotVisibleAscii);
        }
        Ok(Self(key.into()))
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// Why a string is not a valid [`IdempotencyKey`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdempotencyKeyError {
    /// Empty or too long; holds the length in bytes.
    Length(usize),
    /// Holds a space, a control character or non-ASCII.
    NotVisibleAscii,
}

impl fmt::Display for IdempotencyKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Length(len) => write!(
                f,
                "idempotency key must be 1..={MAX_IDEMPOTENCY_KEY_LEN} bytes, got {len}"
            ),
            Self::NotVisibleAscii => f.write_str(
                "idempotency key must be visible ASCII (no spaces or control characters)",
            ),
        }
    }
}

impl std::error::Error for IdempotencyKeyError {}

/// `topics`, each once, in the order first named.
fn distinct(topics: impl IntoIterator<Item = Topic>) -> Vec<Topic> {
    let mut distinct: Vec<Topic> = Vec::new();
    for topic in topics {
        if !distinct.contains(&topic) {
            distinct.push(topic);
        }
    }
    distinct
}

/// One event to publish, to one or more topics.
///
/// ```
/// use tower_sse_pubsub::{Event, IdempotencyKey, PublishRequest, Topic};
///
/// let request = PublishRequest::new([Topic::new("orders")?, Topic::new("audit")?], Event::text("shipped")?)
///     .idempotency_key(IdempotencyKey::new("order-42-shipped")?)
///     .private();
/// assert_eq!(request.topics().len(), 2);
/// assert!(request.is_private());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
#[must_use]
pub struct PublishRequest {
    topics: Vec<Topic>,
    event: Event,
    key: Option<IdempotencyKey>,
    id: Option<EventId>,
    private: bool,
}

impl PublishRequest {
    /// Publishes `event` to `topics`; a topic named twice counts once, the first order is kept.
    /// A broker refuses a request without topics
    /// ([`BrokerError::NoTopics`](super::BrokerError::NoTopics)).
    pub fn new(topics: impl IntoIterator<Item = Topic>, event: Event) -> Self {
        Self {
            topics: distinct(topics),
            event,
            key: None,
            id: None,
            private: false,
        }
    }

    /// Gives the event this id instead of one the broker makes (a Mercure publisher's `id`).
    /// Subscribers resume after it as after any id. It must be new: a broker refuses an id it
    /// still remembers, or one shaped like its own, with
    /// [`BrokerError::DuplicateId`](super::BrokerError::DuplicateId), and publishes nothing.
    /// How long a broker remembers chosen ids is its own setting (for [`MemoryBroker`] a
    /// count, for `RedisBroker` the history's lifetime); a resume after a forgotten id replays
    /// all that is retained, as after an unknown id.
    ///
    /// [`MemoryBroker`]: crate::MemoryBroker
    ///
    /// ```
    /// use tower_sse_pubsub::{Event, EventId, PublishRequest, Topic};
    ///
    /// let id = EventId::new("urn:uuid:5bd5b2a3-5f2c-4a36-9c7e-0e0f6b0f1a2d")?;
    /// let request = PublishRequest::new([Topic::new("books/1")?], Event::text("{}")?).id(id.clone());
    /// assert_eq!(request.chosen_id(), Some(&id));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn id(mut self, id: EventId) -> Self {
        self.id = Some(id);
        self
    }

    /// A retried request with the same key returns the first publish's id and publishes nothing
    /// (within the broker's idempotency window).
    pub fn idempotency_key(mut self, key: IdempotencyKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Marks the event private: only subscribers whose [`Grant`] covers one of its topics
    /// receive it.
    pub fn private(mut self) -> Self {
        self.private = true;
        self
    }

    /// The topics, each once.
    pub fn topics(&self) -> &[Topic] {
        &self.topics
    }

    /// The event.
    pub fn event(&self) -> &Event {
        &self.event
    }

    /// The idempotency key, if any.
    pub fn key(&self) -> Option<&IdempotencyKey> {
        self.key.as_ref()
    }

    /// The id the caller chose for the event, if any (see [`id`](Self::id)).
    pub fn chosen_id(&self) -> Option<&EventId> {
        self.id.as_ref()
    }

    /// Whether the event is private.
    pub fn is_private(&self) -> bool {
        self.private
    }
}

/// Where a subscription starts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Start {
    /// Only events published from now on.
    #[default]
    Live,
    /// Every retained event after this id, then live events (a client's `Last-Event-ID`).
    After(EventId),
    /// Every retained event, then live events.
    Earliest,
}

/// Which private events a subscriber may receive. Public events reach every subscriber of
/// their topics whatever the grant.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Grant {
    /// No private events (the default).
    #[default]
    PublicOnly,
    /// Private events on any of these topics.
    Topics(Vec<Topic>),
    /// Private events with a topic that one of these selectors matches (as Mercure's
    /// `mercure.subscribe` claim grants them: any of the event's topics, canonical or alternate).
    Selectors(Arc<[Selector]>),
    /// Every private event on the subscribed topics.
    All,
}

impl Grant {
    /// Whether a subscriber with this grant may receive `frame`.
    pub fn allows(&self, frame: &Frame) -> bool {
        if !frame.is_private() {
            return true;
        }
        match self {
            Self::PublicOnly => false,
            Self::All => true,
            Self::Topics(granted) => frame.topics().iter().any(|t| granted.contains(t)),
            Self::Selectors(selectors) => frame
                .topics()
                .iter()
                .any(|t| selectors.iter().any(|s| s.matches(t.as_str()))),
        }
    }
}

/// The most a subscription may replay before it goes live: past it, the subscriber is told it
/// missed events ([`Resume::Expired`](super::Resume::Expired) or an in-band
/// [`Delivery::Resync`](super::Delivery::Resync)) instead of receiving them all.
///
/// ```
/// use tower_sse_pubsub::ReplayBudget;
///
/// let budget = ReplayBudget::new(1_000, 2 * 1024 * 1024);
/// assert_eq!((budget.events(), budget.bytes()), (1_000, 2 * 1024 * 1024));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayBudget {
    events: usize,
    bytes: usize,
}

impl ReplayBudget {
    /// At most `events` events and `bytes` bytes of encoded frames.
    pub fn new(events: usize, bytes: usize) -> Self {
        Self { events, bytes }
    }

    /// The most events replayed.
    pub fn events(&self) -> usize {
        self.events
    }

    /// The most bytes of encoded frames replayed.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// What a subscriber wants: its topics (and topic patterns), where to start, its grant, and
/// when to stop.
///
/// ```
/// use std::time::Duration;
/// use tower_sse_pubsub::{EventId, Grant, Start, SubscribeRequest, Topic};
///
/// let request = SubscribeRequest::new([Topic::new("chat")?])
///     .start(Start::After(EventId::new("5f3a9c01-41")?))
///     .grant(Grant::All)
///     .deadline(tokio::time::Instant::now() + Duration::from_secs(3600));
/// assert_eq!(request.topics().len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
#[must_use]
pub struct SubscribeRequest {
    topics: Vec<Topic>,
    patterns: Vec<Selector>,
    start: Start,
    grant: Grant,
    deadline: Option<Instant>,
    budget: Option<ReplayBudget>,
}

impl SubscribeRequest {
    /// Subscribes to `topics` (each counted once), live, public events only, no deadline.
    pub fn new(topics: impl IntoIterator<Item = Topic>) -> Self {
        Self {
            topics: distinct(topics),
            patterns: Vec::new(),
            start: Start::Live,
            grant: Grant::PublicOnly,
            deadline: None,
            budget: None,
        }
    }

    /// Also subscribes to every topic one of `selectors` matches: `*` for all topics, or URI
    /// templates. An exact selector (neither) is the same as naming its topic.
    ///
    /// Brokers that cannot serve patterns refuse the request with
    /// [`BrokerError::Unsupported`](crate::BrokerError::Unsupported).
    ///
    /// ```
    /// use tower_sse_pubsub::{Selector, SubscribeRequest, Topic};
    ///
    /// let request = SubscribeRequest::new([Topic::new("news")?])
    ///     .select([Selector::new("https://example.com/books/{id}")?, Selector::new("chat")?]);
    /// assert_eq!(request.topics().len(), 2); // "news" and "chat"
    /// assert_eq!(request.patterns().len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn select(mut self, selectors: impl IntoIterator<Item = Selector>) -> Self {
        for selector in selectors {
            if !selector.is_any()
                && !selector.is_template()
                && let Ok(topic) = Topic::new(selector.as_str())
            {
                if !self.topics.contains(&topic) {
                    self.topics.push(topic);
                }
            } else if !self.patterns.contains(&selector) {
                self.patterns.push(selector);
            }
        }
        self
    }

    /// The patterns (`*` and URI templates), each once.
    pub fn patterns(&self) -> &[Selector] {
        &self.patterns
    }

    /// Whether the request names no topic and no pattern: brokers refuse it.
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty() && self.patterns.is_empty()
    }

    /// Replays at most this much before going live (default: no limit beyond the history).
    pub fn replay_budget(mut self, budget: ReplayBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The replay budget, if any.
    pub fn budget(&self) -> Option<ReplayBudget> {
        self.budget
    }

    /// Where to start (default [`Start::Live`]).
    pub fn start(mut self, start: Start) -> Self {
        self.start = start;
        self
    }

    /// Starts after `id` when it is `Some` (a resume point), live otherwise.
    pub fn after(self, id: Option<EventId>) -> Self {
        match id {
            Some(id) => self.start(Start::After(id)),
            None => self.start(Start::Live),
        }
    }

    /// Which private events the subscriber may receive (default [`Grant::PublicOnly`]).
    pub fn grant(mut self, grant: Grant) -> Self {
        self.grant = grant;
        self
    }

    /// Ends the subscription at `deadline` (for example when the subscriber's token expires),
    /// with [`SubscriptionEnd::Deadline`](super::SubscriptionEnd::Deadline).
    pub fn deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The topics, each once.
    pub fn topics(&self) -> &[Topic] {
        &self.topics
    }

    /// Where the subscription starts.
    pub fn start_at(&self) -> &Start {
        &self.start
    }

    /// The subscriber's grant.
    pub fn granted(&self) -> &Grant {
        &self.grant
    }

    /// When the subscription ends, if ever.
    pub fn deadline_at(&self) -> Option<Instant> {
        self.deadline
    }
}
