//! A reference reader of event streams: the WHATWG HTML "event stream interpretation"
//! (<https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation>),
//! written out plainly, as the oracle the encoder's property tests and fuzz target check frames
//! against.
//!
//! It is independent of `eventsource-stream` (the client-side parser the other tests use), which
//! deviates from the spec in small ways that matter for a property test: it reports a missing
//! `event:` field as `"message"` (the spec keeps an empty event type buffer and lets the
//! `MessageEvent` default to `message`, which is what [`spec_parse`] reports too), and it only
//! accepts `retry:` values that fit in a `u64` (the spec takes any run of ASCII digits).

/// One event dispatched by [`spec_parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecEvent {
    /// The `MessageEvent` type: the event type buffer, or `message` when it is empty.
    pub event_type: String,
    /// The data buffer at dispatch, less its one trailing LF.
    pub data: String,
    /// The `lastEventId` of the event (the last event ID buffer at dispatch).
    pub last_event_id: String,
    /// The reconnection time set by a `retry:` field of this event, if any. (The spec sets it on
    /// the event source, not the event; it is tracked per event here to check the encoder.)
    pub retry: Option<u128>,
}

/// Reads `stream` as the spec does: strip one leading BOM; split lines at CRLF, lone CR or lone
/// LF; ignore lines starting with `:`; split a field at the first `:` and drop one leading
/// space of the value; append `data` values plus LF to the data buffer; dispatch on a blank line
/// (dropping events with an empty data buffer and one trailing LF of the data). An unterminated
/// last line is discarded, as is an event that the stream ends before dispatching.
pub fn spec_parse(stream: &str) -> Vec<SpecEvent> {
    let mut rest = stream.strip_prefix('\u{feff}').unwrap_or(stream);
    let mut events = Vec::new();
    let mut data = String::new();
    let mut event_type = String::new();
    let mut last_event_id = String::new();
    let mut retry = None;
    while let Some(at) = rest.find(['\r', '\n']) {
        let line = &rest[..at];
        let terminator = if rest[at..].starts_with("\r\n") { 2 } else { 1 };
        rest = &rest[at + terminator..];

        if line.is_empty() {
            if data.is_empty() {
                event_type.clear();
                retry = None;
                continue;
            }
            if data.ends_with('\n') {
                data.pop();
            }
            events.push(SpecEvent {
                event_type: if event_type.is_empty() {
                    "message".to_owned()
                } else {
                    std::mem::take(&mut event_type)
                },
                data: std::mem::take(&mut data),
                last_event_id: last_event_id.clone(),
                retry: retry.take(),
            });
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => event_type = value.to_owned(),
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "id" if !value.contains('\0') => last_event_id = value.to_owned(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                retry = value.parse().ok();
            }
            _ => {}
        }
    }
    events
}

/// What a subscriber must read back for published `data`: SSE cannot carry a CR, so every CRLF,
/// then every lone CR, becomes LF.
pub fn sse_normalized(data: &str) -> String {
    data.replace("\r\n", "\n").replace('\r', "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference parser against the spec's own examples and the three kinds of line break.
    #[test]
    fn reference_parser_follows_the_spec() {
        let events = spec_parse(
            "\u{feff}: test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\n\
             data:  third event\n\nevent: add\r\ndata: a\rdata\rdata: b\n\nretry: 12\ndata: x\n\n\
             data: dropped because the stream ends",
        );
        let event = |event_type: &str, data: &str, id: &str, retry| SpecEvent {
            event_type: event_type.to_owned(),
            data: data.to_owned(),
            last_event_id: id.to_owned(),
            retry,
        };
        assert_eq!(
            events,
            [
                event("message", "first event", "1", None),
                event("message", "second event", "", None),
                event("message", " third event", "", None),
                event("add", "a\n\nb", "", None),
                event("message", "x", "", Some(12)),
            ]
        );
    }
}
