//! Events, topics and ids, and the one place where an event becomes SSE bytes.
//!
//! Every type here validates on construction, so a value that exists is safe to put on the wire:
//! a [`Topic`] is 1..=1024 bytes without control characters, an [`EventId`] and an event type
//! never contain a line break or NUL, and [`Event`] data of any content is split into `data:`
//! lines so that no input can inject a field or a second event.
//!
//! The encoder runs once per published event (see [`Frame`]); every subscriber then receives a
//! reference-counted clone of the same [`Bytes`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

/// The longest topic accepted, in bytes.
pub const MAX_TOPIC_LEN: usize = 1024;
/// The longest event id accepted, in bytes.
pub const MAX_EVENT_ID_LEN: usize = 256;
/// The longest event type accepted, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 256;

/// A named channel that events are published to and subscribed from.
///
/// A `Topic` that exists is valid: 1..=1024 bytes of UTF-8 with no control characters
/// (so it cannot break a log line, a query string or a Redis key name).
///
/// ```
/// use tower_sse_pubsub::Topic;
///
/// let topic = Topic::new("chat")?;
/// assert_eq!(topic.as_str(), "chat");
/// assert!(Topic::new("").is_err());
/// assert!(Topic::new("line\nbreak").is_err());
/// # Ok::<(), tower_sse_pubsub::TopicError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

impl Topic {
    /// Validates `name` and makes it a topic.
    ///
    /// # Errors
    ///
    /// [`TopicError`] when `name` is empty, longer than [`MAX_TOPIC_LEN`] bytes, or contains a
    /// control character.
    pub fn new(name: impl AsRef<str>) -> Result<Self, TopicError> {
        let name = name.as_ref();
        if name.is_empty() || name.len() > MAX_TOPIC_LEN {
            return Err(TopicError::Length(name.len()));
        }
        if let Some(c) = name.chars().find(|c| c.is_control()) {
            return Err(TopicError::ControlCharacter(c));
        }
        Ok(Self(Arc::from(name)))
    }

    /// The topic's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Topic {
    type Err = TopicError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<&str> for Topic {
    type Error = TopicError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl TryFrom<String> for Topic {
    type Error = TopicError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

/// Why a string is not a valid [`Topic`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopicError {
    /// The topic is empty or too long; holds the length in bytes.
    Length(usize),
    /// The topic contains a control character.
    ControlCharacter(char),
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Length(len) => {
                write!(f, "topic must be 1..={MAX_TOPIC_LEN} bytes, got {len}")
            }
            Self::ControlCharacter(c) => write!(
                f,
                "topic must not contain control characters, found {:?}",
                c
            ),
        }
    }
}

impl std::error::Error for TopicError {}

/// The id a broker gave an event.
///
/// Ids are opaque strings to clients: they are sent as the SSE `id:` field and come back as
/// `Last-Event-ID`. Within one broker they are unique and totally ordered; only the broker that
/// issued an id can place it. An `EventId` never contains CR, LF or NUL, so it cannot break a
/// frame, and is 1..=256 bytes long.
///
/// ```
/// use tower_sse_pubsub::EventId;
///
/// let id = EventId::new("3f2a-17")?;
/// assert_eq!(id.as_str(), "3f2a-17");
/// assert!(EventId::new("a\nb").is_err());
/// # Ok::<(), tower_sse_pubsub::EventIdError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EventId(Arc<str>);

impl EventId {
    /// Validates `id`.
    ///
    /// # Errors
    ///
    /// [`EventIdError`] when `id` is empty, longer than [`MAX_EVENT_ID_LEN`] bytes, or contains
    /// CR, LF or NUL.
    pub fn new(id: impl AsRef<str>) -> Result<Self, EventIdError> {
        let id = id.as_ref();
        if id.is_empty() || id.len() > MAX_EVENT_ID_LEN {
            return Err(EventIdError::Length(id.len()));
        }
        if let Some(c) = id.chars().find(|c| matches!(c, '\r' | '\n' | '\0')) {
            return Err(EventIdError::ForbiddenCharacter(c));
        }
        Ok(Self(Arc::from(id)))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An id a broker built from parts that cannot break the rules (digits, hex, dashes).
    pub(crate) fn from_trusted(id: String) -> Self {
        debug_assert!(Self::new(&id).is_ok(), "broker built an invalid id {id:?}");
        Self(Arc::from(id))
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for EventId {
    type Err = EventIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// Why a string is not a valid [`EventId`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventIdError {
    /// The id is empty or too long; holds the length in bytes.
    Length(usize),
    /// The id contains CR, LF or NUL, which would break the SSE framing.
    ForbiddenCharacter(char),
}

impl fmt::Display for EventIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Length(len) => {
                write!(
                    f,
                    "event id must be 1..={MAX_EVENT_ID_LEN} bytes, got {len}"
                )
            }
            Self::ForbiddenCharacter(c) => {
                write!(f, "event id must not contain CR, LF or NUL, found {c:?}")
            }
        }
    }
}

impl std::error::Error for EventIdError {}

/// An event to publish: its data, and optionally an event type and a reconnection time.
///
/// The id is not part of an `Event`: the broker assigns it at publish, so ids stay unique and
/// ordered. Data may contain anything, line breaks included: CRLF, CR and LF each become a new
/// `data:` line, and subscribers read back the original text with every line break as LF (the
/// SSE format has no way to tell them apart). Data must not be empty, because browsers silently
/// drop events whose data is empty.
///
/// ```
/// use std::time::Duration;
/// use tower_sse_pubsub::Event;
///
/// let event = Event::text("hello\nworld")?
///     .with_event_type("greeting")?
///     .with_retry(Duration::from_secs(3));
/// assert_eq!(event.data(), "hello\nworld");
///
/// let json = Event::json(&serde_json::json!({"user": "ada", "text": "hi"}))?;
/// assert_eq!(json.data(), r#"{"text":"hi","user":"ada"}"#);
/// # Ok::<(), tower_sse_pubsub::EventError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Event {
    data: String,
    event_type: Option<String>,
    retry: Option<Duration>,
}

impl Event {
    /// An event whose data is `data`, sent as it is.
    ///
    /// # Errors
    ///
    /// [`EventError::EmptyData`] when `data` is empty.
    pub fn text(data: impl Into<String>) -> Result<Self, EventError> {
        let data = data.into();
        if data.is_empty() {
            return Err(EventError::EmptyData);
        }
        Ok(Self {
            data,
            event_type: None,
            retry: None,
        })
    }

    /// An event without data, as a Mercure publisher may send one. Browsers do not dispatch it
    /// (the SSE rules drop an event whose data is empty) but do record its id, so a client that
    /// reconnects resumes after it.
    ///
    /// ```
    /// use tower_sse_pubsub::Event;
    ///
    /// assert_eq!(&Event::empty().encode_fields()[..], b"data: \n\n");
    /// ```
    pub fn empty() -> Self {
        Self {
            data: String::new(),
            event_type: None,
            retry: None,
        }
    }

    /// An event whose data is `value` serialized as compact JSON.
    ///
    /// # Errors
    ///
    /// [`EventError::Json`] when `value` cannot be serialized (for example a map with
    /// non-string keys).
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Self, EventError> {
        let data = serde_json::to_string(value).map_err(|e| EventError::Json(JsonError::new(e)))?;
        Self::text(data)
    }

    /// Sets the event type (the SSE `event:` field), which browsers dispatch to
    /// `addEventListener(type, ..)` instead of `onmessage`.
    ///
    /// # Errors
    ///
    /// [`EventError::InvalidEventType`] when `event_type` is empty, longer than
    /// [`MAX_EVENT_TYPE_LEN`] bytes, or contains CR, LF or NUL.
    pub fn with_event_type(mut self, event_type: impl Into<String>) -> Result<Self, EventError> {
        let event_type = event_type.into();
        if event_type.is_empty()
            || event_type.len() > MAX_EVENT_TYPE_LEN
            || event_type.contains(['\r', '\n', '\0'])
        {
            return Err(EventError::InvalidEventType(event_type));
        }
        self.event_type = Some(event_type);
        Ok(self)
    }

    /// Sets the reconnection time (the SSE `retry:` field) that clients use after this event.
    pub fn with_retry(mut self, retry: Duration) -> Self {
        self.retry = Some(retry);
        self
    }

    /// The data.
    pub fn data(&self) -> &str {
        &self.data
    }

    /// The event type, if any.
    pub fn event_type(&self) -> Option<&str> {
        self.event_type.as_deref()
    }

    /// The reconnection time, if any.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// Encodes every field but the id: `event:`, `retry:`, the `data:` lines and the blank line
    /// that ends the event. Brokers prefix the `id:` line with [`Frame::new`], or, where the id is
    /// assigned elsewhere (a Redis script), by the same `id: <id>\n` rule.
    pub fn encode_fields(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.fields_len());
        self.write_fields(&mut buf);
        buf.freeze()
    }

    /// An upper bound of the encoded fields' length, so encoding allocates once.
    pub(crate) fn fields_len(&self) -> usize {
        let breaks = self
            .data
            .bytes()
            .filter(|&b| b == b'\r' || b == b'\n')
            .count();
        let event_type = self.event_type.as_ref().map_or(0, |t| t.len() + 8);
        let retry = if self.retry.is_some() { 28 } else { 0 };
        // "data: " and "\n" per line, and the blank line at the end.
        event_type + retry + self.data.len() + 7 * (breaks + 1) + 1
    }

    /// Appends the encoded fields to `buf`.
    fn write_fields(&self, buf: &mut BytesMut) {
        if let Some(event_type) = &self.event_type {
            buf.put_slice(b"event: ");
            buf.put_slice(event_type.as_bytes());
            buf.put_u8(b'\n');
        }
        if let Some(retry) = self.retry {
            buf.put_slice(b"retry: ");
            buf.put_slice(retry.as_millis().to_string().as_bytes());
            buf.put_u8(b'\n');
        }
        for line in data_lines(&self.data) {
            buf.put_slice(b"data: ");
            buf.put_slice(line.as_bytes());
            buf.put_u8(b'\n');
        }
        buf.put_u8(b'\n');
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("data", &self.data)
            .field("event_type", &self.event_type)
            .field("retry", &self.retry)
            .finish()
    }
}

/// Splits `data` at every CRLF, CR or LF, the three line breaks of the SSE grammar.
fn data_lines(data: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let current = rest?;
        // A byte search: both breaks are ASCII, so every index found is a char boundary.
        match current.bytes().position(|b| b == b'\r' || b == b'\n') {
            Some(at) => {
                let skip = if current.as_bytes()[at..].starts_with(b"\r\n") {
                    2
                } else {
                    1
                };
                rest = Some(&current[at + skip..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// Why an [`Event`] could not be built.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum EventError {
    /// The data is empty; EventSource would never dispatch such an event.
    EmptyData,
    /// The event type is empty, too long, or contains CR, LF or NUL.
    InvalidEventType(String),
    /// The value could not be serialized as JSON.
    Json(JsonError),
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyData => f.write_str(
                "event data must not be empty (EventSource ignores events with empty data)",
            ),
            Self::InvalidEventType(t) => write!(
                f,
                "event type must be 1..={MAX_EVENT_TYPE_LEN} bytes without CR, LF or NUL, got {t:?}"
            ),
            Self::Json(e) => write!(f, "event data could not be serialized as JSON: {e}"),
        }
    }
}

impl std::error::Error for EventError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Json(e) => Some(e),
            _ => None,
        }
    }
}

/// A value that could not be written as JSON, or JSON that could not be read as the value
/// wanted ([`Event::json`], [`Frame::json`]). Its message says where and why.
#[derive(Debug, Clone)]
pub struct JsonError(Arc<serde_json::Error>);

impl JsonError {
    fn new(error: serde_json::Error) -> Self {
        Self(Arc::new(error))
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for JsonError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// A published event as it travels to subscribers: its id, the topics it was published to,
/// and its complete SSE encoding.
///
/// Cloning a `Frame` is one reference-count increment; every subscriber of an event holds the
/// same frame, so the event is encoded once however many subscribers there are.
#[derive(Clone)]
pub struct Frame(Arc<FrameInner>);

struct FrameInner {
    id: EventId,
    sequence: u64,
    topics: Box<[Topic]>,
    private: bool,
    bytes: Bytes,
}

impl Frame {
    /// Builds the frame of `event` under `id`: the `id:` line followed by
    /// [`Event::encode_fields`]. `sequence` is the broker's position for `id`, used to order
    /// and de-duplicate frames; it must grow with every event the broker issues.
    pub fn new(id: EventId, sequence: u64, topics: &[Topic], event: &Event) -> Self {
        Self::encode(id, sequence, topics, false, event)
    }

    /// Builds the frame of a publish request: its event under `id`, with the request's topics and
    /// private flag travelling beside the encoded bytes.
    pub fn for_request(id: EventId, sequence: u64, request: &crate::PublishRequest) -> Self {
        Self::encode(
            id,
            sequence,
            request.topics(),
            request.is_private(),
            request.event(),
        )
    }

    fn encode(id: EventId, sequence: u64, topics: &[Topic], private: bool, event: &Event) -> Self {
        let mut buf = BytesMut::with_capacity(id.as_str().len() + 5 + event.fields_len());
        buf.put_slice(b"id: ");
        buf.put_slice(id.as_str().as_bytes());
        buf.put_u8(b'\n');
        event.write_fields(&mut buf);
        Self(Arc::new(FrameInner {
            id,
            sequence,
            topics: topics.into(),
            private,
            bytes: buf.freeze(),
        }))
    }

    /// A frame that was encoded elsewhere (by a Redis script, with the same `id:` line rule as
    /// [`Frame::new`]) and read back; `bytes` must be a complete frame starting with its id line.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn from_encoded(
        id: EventId,
        sequence: u64,
        topics: Box<[Topic]>,
        private: bool,
        bytes: Bytes,
    ) -> Self {
        Self(Arc::new(FrameInner {
            id,
            sequence,
            topics,
            private,
            bytes,
        }))
    }

    /// Whether the event is private: delivered only to subscribers whose
    /// [`Grant`](crate::Grant) covers one of its topics.
    pub fn is_private(&self) -> bool {
        self.0.private
    }

    /// The event's id.
    pub fn id(&self) -> &EventId {
        &self.0.id
    }

    /// The broker's position of this event: larger means published later.
    pub fn sequence(&self) -> u64 {
        self.0.sequence
    }

    /// The topics the event was published to.
    pub fn topics(&self) -> &[Topic] {
        &self.0.topics
    }

    /// The complete SSE encoding, ready to write to a response.
    pub fn bytes(&self) -> &Bytes {
        &self.0.bytes
    }

    /// The event's fields read back from the encoding, for consumers that are not SSE clients
    /// (a gRPC stream, a log). Data comes back as an SSE client reads it: line breaks as LF.
    ///
    /// ```
    /// use tower_sse_pubsub::{Event, EventId, Frame};
    ///
    /// let event = Event::text("one\ntwo")?.with_event_type("note")?;
    /// let frame = Frame::new(EventId::new("e-1")?, 1, &[], &event);
    /// let fields = frame.fields();
    /// assert_eq!((fields.event_type.as_deref(), fields.data.as_str()), (Some("note"), "one\ntwo"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fields(&self) -> FrameFields {
        self.read_fields()
    }

    /// Reads the event's data as JSON into a `T`, for Rust consumers of events published with
    /// [`Publisher::publish_json`](crate::Publisher::publish_json) or [`Event::json`].
    ///
    /// ```
    /// use tower_sse_pubsub::{Event, EventId, Frame};
    ///
    /// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    /// struct Shipped {
    ///     order: u32,
    /// }
    ///
    /// let event = Event::json(&Shipped { order: 42 })?;
    /// let frame = Frame::new(EventId::new("e-1")?, 1, &[], &event);
    /// assert_eq!(frame.json::<Shipped>()?, Shipped { order: 42 });
    /// assert!(frame.json::<Vec<u8>>().is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`JsonError`] when the data is not JSON, or not JSON of a `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, JsonError> {
        serde_json::from_str(&self.read_fields().data).map_err(JsonError::new)
    }

    fn read_fields(&self) -> FrameFields {
        let mut fields = FrameFields {
            event_type: None,
            data: String::new(),
            retry: None,
        };
        let text = String::from_utf8_lossy(&self.0.bytes);
        let mut lines = 0;
        for line in text.lines() {
            let (field, value) = line.split_once(": ").unwrap_or((line, ""));
            match field {
                "event" => fields.event_type = Some(value.to_owned()),
                "retry" => fields.retry = value.parse().ok().map(Duration::from_millis),
                "data" => {
                    if lines > 0 {
                        fields.data.push('\n');
                    }
                    fields.data.push_str(value);
                    lines += 1;
                }
                _ => {}
            }
        }
        fields
    }
}

/// The fields of a published event, as [`Frame::fields`] reads them back.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FrameFields {
    /// The event type, if one was set.
    pub event_type: Option<String>,
    /// The data, line breaks as LF.
    pub data: String,
    /// The reconnection time, if one was set.
    pub retry: Option<Duration>,
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("id", &self.0.id)
            .field("topics", &self.0.topics)
            .field("private", &self.0.private)
            .field("bytes", &self.0.bytes)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_lines_split_at_each_kind_of_line_break() {
        let lines: Vec<_> = data_lines("a\r\nb\rc\nd").collect();
        assert_eq!(lines, ["a", "b", "c", "d"]);
        let lines: Vec<_> = data_lines("\n").collect();
        assert_eq!(lines, ["", ""]);
        let lines: Vec<_> = data_lines("\r\r\n").collect();
        assert_eq!(lines, ["", "", ""]);
    }

    #[test]
    fn frame_puts_id_first_and_ends_with_a_blank_line() {
        let event = Event::text("x\ny")
            .and_then(|e| e.with_event_type("msg"))
            .map(|e| e.with_retry(Duration::from_millis(1500)))
            .expect("valid event");
        let id = EventId::new("e-1").expect("valid id");
        let frame = Frame::new(id, 1, &[], &event);
        assert_eq!(
            &frame.bytes()[..],
            b"id: e-1\nevent: msg\nretry: 1500\ndata: x\ndata: y\n\n"
        );
    }

    #[test]
    fn fields_read_back_what_was_encoded() {
        for data in [
            "x",
            " leading",
            "a\r\nb\rc\nd",
            "\n",
            "trailing\n",
            "data: nested",
        ] {
            let event = Event::text(data)
                .and_then(|e| e.with_event_type("t"))
                .map(|e| e.with_retry(Duration::from_millis(7)))
                .expect("valid event");
            let frame = Frame::new(EventId::from_trusted("e-1".to_owned()), 1, &[], &event);
            let fields = frame.fields();
            assert_eq!(fields.data, data.replace("\r\n", "\n").replace('\r', "\n"));
            assert_eq!(fields.event_type.as_deref(), Some("t"));
            assert_eq!(fields.retry, Some(Duration::from_millis(7)));
        }
    }

    #[test]
    fn leading_space_in_data_survives() {
        let event = Event::text(" x").expect("valid event");
        assert_eq!(&event.encode_fields()[..], b"data:  x\n\n");
    }

    #[test]
    fn invalid_fields_are_errors() {
        assert!(matches!(Event::text(""), Err(EventError::EmptyData)));
        let event = Event::text("x").expect("valid event");
        assert!(event.clone().with_event_type("a\rb").is_err());
        assert!(event.clone().with_event_type("").is_err());
        assert!(event.with_event_type("a\0b").is_err());
        assert!(EventId::new("").is_err());
        assert!(EventId::new("x".repeat(257)).is_err());
        assert!(Topic::new("x".repeat(1025)).is_err());
        assert!(Topic::new("x".repeat(1024)).is_ok());
        assert!(Topic::new("tab\there").is_err());
    }
}
