//! Where things live in the stream: topics become one subject token each (the lowercase hex of
//! their UTF-8), so any valid topic, dots, spaces, `*`, `>` and all, maps to a valid subject and
//! back again.
//!
//! Under the prefix `p`: `p.t.<hex topic>` holds the events of one topic (so JetStream's
//! per-subject limit is a per-topic history), `p.m` the events of several topics (published
//! once, every topic in a header), and `p.id.<hex id>` the chosen ids (a claim, then the
//! sequence of the event that took the id).

use crate::{EventId, Topic};

/// The subjects of one broker's stream.
#[derive(Debug, Clone)]
pub(super) struct Subjects {
    prefix: String,
}

impl Subjects {
    pub(super) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The prefix of every subject.
    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Every subject of the stream: what the live feed reads.
    pub(super) fn all(&self) -> String {
        format!("{}.>", self.prefix)
    }

    /// Where the stream republishes every message it stores (outside the stream's subjects):
    /// what the live feed subscribes to.
    pub(super) fn republished(&self) -> String {
        format!("{}-live.>", self.prefix)
    }

    /// The stream's republishing of every message to [`Subjects::republished`].
    pub(super) fn republish(&self) -> async_nats::jetstream::stream::Republish {
        async_nats::jetstream::stream::Republish {
            source: self.all(),
            destination: self.republished(),
            headers_only: false,
        }
    }

    /// The subject an event on `topics` (at least one) is published to.
    pub(super) fn event(&self, topics: &[Topic]) -> String {
        match topics {
            [only] => self.topic(only),
            _ => self.multi(),
        }
    }

    /// The subject of the events of `topic` alone.
    pub(super) fn topic(&self, topic: &Topic) -> String {
        format!("{}.t.{}", self.prefix, encode(topic.as_str()))
    }

    /// The subject of the events on several topics.
    pub(super) fn multi(&self) -> String {
        format!("{}.m", self.prefix)
    }

    /// The subject that records who took the chosen id `id`.
    pub(super) fn chosen_id(&self, id: &EventId) -> String {
        format!("{}.id.{}", self.prefix, encode(id.as_str()))
    }

    /// Whether `subject` holds events (not chosen-id records).
    pub(super) fn is_event(&self, subject: &str) -> bool {
        subject
            .strip_prefix(self.prefix.as_str())
            .and_then(|rest| rest.strip_prefix('.'))
            .is_some_and(|rest| rest == "m" || rest.starts_with("t."))
    }
}

/// The subjects of the advisories JetStream publishes about the stream `name` (created,
/// deleted, updated).
pub(super) fn advisories(name: &str) -> String {
    format!("$JS.EVENT.ADVISORY.STREAM.*.{name}")
}

/// The lowercase hex of `text`'s UTF-8: one subject token for any string.
pub(super) fn encode(text: &str) -> String {
    use std::fmt::Write;
    let mut token = String::with_capacity(text.len() * 2);
    for byte in text.bytes() {
        let _ = write!(token, "{byte:02x}");
    }
    token
}

/// The string [`encode`] made `token` from, if it made it.
pub(super) fn decode(token: &str) -> Option<String> {
    if !token.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// Why a subject prefix or stream name is refused, if it is.
pub(super) fn check_prefix(prefix: &str) -> Result<(), String> {
    let bad_token = prefix.split('.').find(|token| {
        token.is_empty()
            || token
                .chars()
                .any(|c| c.is_whitespace() || c == '*' || c == '>')
    });
    match bad_token {
        Some(_) => Err(format!(
            "subject prefix {prefix:?} must be dot-separated non-empty tokens without spaces, \
             `*` or `>` (say `sse` or `myapp.sse`)"
        )),
        None => Ok(()),
    }
}

pub(super) fn check_stream_name(name: &str) -> Result<(), String> {
    let bad = name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'));
    if bad {
        return Err(format!(
            "stream name {name:?} must be non-empty, without spaces, `.`, `*`, `>`, `/` or `\\` \
             (say `SSE`)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_maps_to_one_token_and_back() {
        for name in [
            "chat",
            "a.b",
            "with space",
            "*",
            ">",
            "a.*.>",
            "ünï✓",
            "/books/{id}",
        ] {
            let token = encode(name);
            assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
            assert_eq!(decode(&token).as_deref(), Some(name));
        }
        assert_eq!(decode("zz"), None);
        assert_eq!(decode("abc"), None);
    }

    #[test]
    fn event_subjects_are_told_from_id_records() {
        let subjects = Subjects::new("app.sse");
        let topic = Topic::new("a.b").expect("topic");
        assert!(subjects.is_event(&subjects.topic(&topic)));
        assert!(subjects.is_event(&subjects.multi()));
        let id = EventId::new("x").expect("id");
        assert!(!subjects.is_event(&subjects.chosen_id(&id)));
        assert!(!subjects.is_event("other.t.00"));
    }

    #[test]
    fn prefixes_and_names_are_checked() {
        assert!(check_prefix("sse").is_ok());
        assert!(check_prefix("app.sse").is_ok());
        for bad in ["", "a..b", "a.*", "a b", ">"] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
        assert!(check_stream_name("SSE").is_ok());
        assert!(check_stream_name("a.b").is_err());
    }
}
