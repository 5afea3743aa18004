//! A published event as one JetStream message, and back: the data is the payload; the topics,
//! event type, retry, private flag and chosen id travel in headers. Ids are `<epoch>-<stream
//! sequence>`, the epoch being the stream's creation time, so a recreated stream (whose
//! sequences start again) never issues an id that an old one could be mistaken for.

use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;

use super::subject::{decode, encode};
use crate::{Event, EventId, Frame, PublishRequest, Topic};

/// The event's topics: their hex tokens, comma-separated.
const TOPICS: &str = "Sse-Topics";
/// The event type, in hex (header values may not carry every character an event type may).
const EVENT_TYPE: &str = "Sse-Type";
/// The reconnection time, in milliseconds.
const RETRY: &str = "Sse-Retry";
/// Present (`1`) on private events.
const PRIVATE: &str = "Sse-Private";
/// The chosen id, in hex.
const CHOSEN_ID: &str = "Sse-Id";

/// The identity of one incarnation of the stream: its creation time in nanoseconds, in hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Epoch(String);

impl Epoch {
    pub(super) fn of(info: &async_nats::jetstream::stream::Info) -> Self {
        Self(format!("{:x}", info.created.unix_timestamp_nanos()))
    }

    /// The broker's own id for the message at `sequence` (hex, a dash and digits: always a
    /// valid id, so `None` never happens in practice).
    pub(super) fn id(&self, sequence: u64) -> Option<EventId> {
        EventId::new(format!("{}-{sequence}", self.0)).ok()
    }

    /// The sequence `id` names in this epoch, if it is one of this epoch's ids.
    pub(super) fn sequence_of(&self, id: &EventId) -> Option<u64> {
        let (epoch, sequence) = id.as_str().rsplit_once('-')?;
        if epoch != self.0 || sequence.starts_with('+') {
            return None;
        }
        sequence.parse().ok()
    }
}

/// The headers and payload that carry `request`'s event.
pub(super) fn encode_request(request: &PublishRequest) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    let topics: Vec<String> = request
        .topics()
        .iter()
        .map(|t| encode(t.as_str()))
        .collect();
    headers.insert(TOPICS, topics.join(",").as_str());
    let event = request.event();
    if let Some(event_type) = event.event_type() {
        headers.insert(EVENT_TYPE, encode(event_type).as_str());
    }
    if let Some(retry) = event.retry() {
        headers.insert(RETRY, retry.as_millis().to_string().as_str());
    }
    if request.is_private() {
        headers.insert(PRIVATE, "1");
    }
    if let Some(id) = request.chosen_id() {
        headers.insert(CHOSEN_ID, encode(id.as_str()).as_str());
    }
    (headers, Bytes::copy_from_slice(event.data().as_bytes()))
}

/// The frame of the event message at `sequence`, or `None` when the message is not one this
/// crate wrote (it is skipped, with a warning).
pub(super) fn decode_frame(
    epoch: &Epoch,
    sequence: u64,
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> Option<Frame> {
    let frame = read(epoch, sequence, headers, payload);
    if frame.is_none() {
        tracing::warn!(
            sequence,
            "skipping a NATS stream message that is not an event of this broker"
        );
    }
    frame
}

fn read(
    epoch: &Epoch,
    sequence: u64,
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> Option<Frame> {
    let headers = headers?;
    let value = |name: &str| headers.get(name).map(|v| v.as_str());
    let topics = value(TOPICS)?
        .split(',')
        .map(|token| Topic::new(decode(token)?).ok())
        .collect::<Option<Vec<Topic>>>()?;
    if topics.is_empty() {
        return None;
    }
    let data = std::str::from_utf8(payload).ok()?;
    let mut event = if data.is_empty() {
        Event::empty()
    } else {
        Event::text(data).ok()?
    };
    if let Some(event_type) = value(EVENT_TYPE) {
        event = event.with_event_type(decode(event_type)?).ok()?;
    }
    if let Some(retry) = value(RETRY) {
        // Milliseconds as `Duration::as_millis` wrote them: up to `Duration::MAX`, past u64.
        let millis: u128 = retry.parse().ok()?;
        let seconds = u64::try_from(millis / 1000).ok()?;
        let rest = Duration::from_millis((millis % 1000) as u64);
        event = event.with_retry(Duration::from_secs(seconds).checked_add(rest)?);
    }
    let id = match value(CHOSEN_ID) {
        Some(id) => EventId::new(decode(id)?).ok()?,
        None => epoch.id(sequence)?,
    };
    let mut request = PublishRequest::new(topics, event);
    if value(PRIVATE) == Some("1") {
        request = request.private();
    }
    Some(Frame::for_request(id, sequence, &request))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_survives_the_trip_through_headers() {
        let epoch = Epoch("18a".to_owned());
        let topics = vec![
            Topic::new("a.b c").expect("topic"),
            Topic::new("ü*>").expect("topic"),
        ];
        let event = Event::text("line one\nline two")
            .and_then(|e| e.with_event_type("tÿpe: x"))
            .expect("event")
            .with_retry(Duration::from_millis(1500));
        let request = PublishRequest::new(topics.clone(), event).private();
        let (headers, payload) = encode_request(&request);
        let frame = decode_frame(&epoch, 7, Some(&headers), &payload).expect("a frame");
        let expected = Frame::for_request(epoch.id(7).expect("id"), 7, &request);
        assert_eq!(frame.bytes(), expected.bytes());
        assert_eq!(frame.topics(), &topics[..]);
        assert!(frame.is_private());
        assert_eq!(frame.id().as_str(), "18a-7");
        assert_eq!(epoch.sequence_of(frame.id()), Some(7));
    }

    #[test]
    fn a_chosen_id_and_an_empty_event_are_kept() {
        let epoch = Epoch("1".to_owned());
        let chosen = EventId::new("urn:uuid:1-2").expect("id");
        let request = PublishRequest::new([Topic::new("t").expect("topic")], Event::empty())
            .id(chosen.clone());
        let (headers, payload) = encode_request(&request);
        let frame = decode_frame(&epoch, 3, Some(&headers), &payload).expect("a frame");
        assert_eq!(frame.id(), &chosen);
        assert_eq!(frame.sequence(), 3);
        assert!(!frame.is_private());
    }

    #[test]
    fn ids_of_other_epochs_name_no_sequence() {
        let epoch = Epoch("abc".to_owned());
        for other in ["abd-1", "abc", "abc-x", "abc-+1", "x"] {
            let id = EventId::new(other).expect("id");
            assert_eq!(epoch.sequence_of(&id), None, "{other}");
        }
        assert_eq!(epoch.sequence_of(&epoch.id(42).expect("id")), Some(42));
    }

    #[test]
    fn foreign_messages_are_not_frames() {
        let epoch = Epoch("1".to_owned());
        assert!(decode_frame(&epoch, 1, None, b"x").is_none());
        let mut headers = HeaderMap::new();
        headers.insert(TOPICS, "zz");
        assert!(decode_frame(&epoch, 1, Some(&headers), b"x").is_none());
    }
}
