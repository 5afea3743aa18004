//! The fuzz targets' properties (`fuzz/`, run with cargo-fuzz on nightly) in the normal test
//! suite, on stable: each replays the seeds committed under `fuzz/corpus/<target>/`, then
//! checks a few thousand inputs that proptest generates. The checks are the fuzz targets' own
//! functions, `fuzz/src/checks.rs`, included here as they are.
//!
//! `FUZZ_PROPERTY_CASES=100000` runs longer.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::PathBuf;
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::Config;

// `harness()` is the fuzz targets' process-wide instance; each test here makes its own, so that
// what one publishes cannot show up in another's replay.
#[allow(dead_code)]
#[path = "../fuzz/src/checks.rs"]
mod checks;

use checks::Harness;

/// The seeds of `fuzz/corpus/<target>/` (files named `seed-*`), sorted by name.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        // Only the committed seeds: a local fuzzing run may have added its own inputs.
        .filter(|path| {
            path.is_file()
                && path
                    .file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| name.starts_with("seed-"))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    files
        .into_iter()
        .map(|path| {
            let data = std::fs::read(&path).expect("a readable seed");
            (path, data)
        })
        .collect()
}

/// Runs `check` on every seed of `target`, naming the seed that fails.
fn replay(target: &str, check: impl Fn(&[u8])) {
    for (path, data) in corpus(target) {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(&data))) {
            eprintln!("fuzz seed {} failed", path.display());
            resume_unwind(panic);
        }
    }
}

#[test]
fn publish_body_seeds() {
    let harness = Harness::new();
    replay("publish_body", |data| harness.publish_body(data));
}

#[test]
fn subscribe_query_seeds() {
    let harness = Harness::new();
    replay("subscribe_query", |data| harness.subscribe_query(data));
}

#[test]
fn encode_seeds() {
    replay("encode", checks::encode);
}

/// Cases per property: 2,000 in the normal suite.
fn config() -> Config {
    let cases = std::env::var("FUZZ_PROPERTY_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(2_000);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Concatenates pieces drawn from `pieces`, or single arbitrary bytes, into one input.
fn bytes_from(pieces: &'static [&'static str], max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            4 => select(pieces).prop_map(|piece| piece.as_bytes().to_vec()),
            1 => any::<u8>().prop_map(|byte| vec![byte]),
        ],
        0..max,
    )
    .prop_map(|pieces| pieces.concat())
}

/// Form and JSON fragments, valid and not, for publish bodies.
const PUBLISH_PIECES: &[&str] = &[
    "topic=",
    "data=",
    "event=",
    "retry=",
    "&",
    "=",
    "+",
    "%",
    "%C3",
    "%A9",
    "%FF",
    "%0A",
    "%00",
    "%26",
    "a",
    "b",
    "x",
    "resync",
    "1500",
    "99",
    "\u{e9}",
    "\u{1f980}",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "\"topic\"",
    "\"topics\"",
    "\"data\"",
    "\"event\"",
    "\"retry\"",
    "\"a\"",
    "1",
    "-1",
    "1.5",
    "null",
    "true",
    "\\n",
    "\\u00e9",
    "\\ud800",
    " ",
];

/// Form values: mostly valid, some not UTF-8 once decoded or not valid for their field.
fn form_value() -> impl Strategy<Value = Vec<u8>> {
    const VALID: &[&str] = &[
        "a",
        "b",
        "x",
        "+",
        "%C3%A9",
        "%26",
        "%0A",
        "%0D%0A",
        "%3D",
        "1500",
        "\u{e9}",
        "%F0%9F%A6%80",
    ];
    const INVALID: &[&str] = &[
        "%C3", "%A9", "%FF", "%00", "%07", "%", "99", "resync", "\u{85}",
    ];
    prop::collection::vec(
        prop_oneof![
            8 => select(VALID).prop_map(|piece| piece.as_bytes().to_vec()),
            1 => select(INVALID).prop_map(|piece| piece.as_bytes().to_vec()),
            1 => any::<u8>().prop_map(|byte| vec![byte]),
        ],
        1..4,
    )
    .prop_map(|pieces| pieces.concat())
}

/// A form body: topics, data, maybe an event type and a retry, maybe a stray field, in order.
fn form_body() -> impl Strategy<Value = Vec<u8>> {
    let field = |name: &'static str| form_value().prop_map(move |value| (name, value));
    (
        prop::collection::vec(field("topic"), 1..4),
        prop_oneof![6 => prop::collection::vec(field("data"), 1..=1), 1 => prop::collection::vec(field("data"), 0..3)],
        prop::option::weighted(0.3, field("event")),
        prop::option::weighted(0.3, prop_oneof![
            3 => (100u64..5_000_000).prop_map(|ms| ("retry", ms.to_string().into_bytes())),
            1 => field("retry"),
        ]),
        prop::option::weighted(0.1, (select(&["colour", "", "top%69c", "data"][..]), form_value())),
    )
        .prop_map(|(topics, data, event, retry, stray)| {
            let pairs: Vec<Vec<u8>> = topics
                .into_iter()
                .chain(data)
                .chain(event)
                .chain(retry)
                .chain(stray)
                .map(|(name, value)| [name.as_bytes(), b"=", &value].concat())
                .collect();
            pairs.join(&b'&')
        })
}

/// A JSON body: an object of members, mostly the right ones with values of the right type,
/// sometimes cut short or with a stray byte.
fn json_body() -> impl Strategy<Value = Vec<u8>> {
    const STRINGS: &[&str] = &[
        "\"a\"",
        "\"b\"",
        "\"caf\\u00e9\"",
        "\"a\\nb\\r\"",
        "\"\\ud800\"",
        "\"\"",
        "\"resync\"",
        "\"\\u0000\"",
        "\"\\u0007\"",
        "\"\u{1f980}\"",
    ];
    const OTHERS: &[&str] = &[
        "[\"a\",\"b\"]",
        "[\"a\",1]",
        "[]",
        "1500",
        "99",
        "-1",
        "1.5",
        "1e3",
        "null",
        "true",
        "{\"x\":[1,2]}",
    ];
    const KEYS: &[&str] = &[
        "\"topic\"",
        "\"topics\"",
        "\"data\"",
        "\"event\"",
        "\"retry\"",
        "\"colour\"",
    ];
    let value = prop_oneof![3 => select(STRINGS), 2 => select(OTHERS)];
    (
        select(STRINGS),
        select(STRINGS),
        prop::collection::vec((select(KEYS), value), 0..3),
        prop_oneof![6 => Just(Vec::new()), 1 => bytes_from(PUBLISH_PIECES, 2)],
    )
        .prop_map(|(topic, data, extra, junk)| {
            let members: Vec<String> = [("\"topic\"", topic), ("\"data\"", data)]
                .into_iter()
                .chain(extra)
                .map(|(key, value)| format!("{key}:{value}"))
                .collect();
            [format!("{{{}}}", members.join(",")).as_bytes(), &junk].concat()
        })
}

/// A content-type selector and a body: mostly well-formed ones for their type.
fn publish_input() -> impl Strategy<Value = (u8, Vec<u8>)> {
    prop_oneof![
        2 => (select(&[0u8, 3][..]), form_body()),
        2 => (select(&[1u8, 4][..]), json_body()),
        1 => (any::<u8>(), bytes_from(PUBLISH_PIECES, 24)),
    ]
}

/// A subscribe query: `name=value` pairs, mostly topics and resume ids.
fn subscribe_query() -> impl Strategy<Value = Vec<u8>> {
    const NAMES: &[&str] = &["topic", "topic", "lastEventID", "last_event_id", "x", ""];
    prop_oneof![
        3 => prop::collection::vec((select(NAMES), form_value()), 0..4).prop_map(|pairs| {
            let pairs: Vec<Vec<u8>> = pairs
                .into_iter()
                .map(|(name, value)| [name.as_bytes(), b"=", &value].concat())
                .collect();
            pairs.join(&b'&')
        }),
        1 => bytes_from(QUERY_PIECES, 16),
    ]
}

/// A `Last-Event-ID` header's bytes, or what follows a seed id.
fn resume_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => line_text().prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..24),
        1 => framing_text().prop_map(String::into_bytes),
    ]
}

/// Query fragments for subscribe requests.
const QUERY_PIECES: &[&str] = &[
    "topic=",
    "lastEventID=",
    "last_event_id=",
    "&",
    "=",
    "+",
    "%",
    "%C3",
    "%A9",
    "%FF",
    "%0A",
    "%00",
    "%0D",
    "a",
    "b",
    "1",
    "-",
    "\u{e9}",
    "\u{7f}",
    "\u{85}",
    " ",
    "#",
];

/// Pieces that stress SSE framing, for event data, ids and types.
const FRAMING_PIECES: &[&str] = &[
    "\r\n",
    "\r",
    "\n",
    "\n\n",
    ":",
    " ",
    "data:",
    "data: ",
    "id: ",
    "event: ",
    "retry: 10",
    ": comment",
    "\0",
    "\t",
    "\u{feff}",
    "\u{2028}",
    "\u{85}",
    "\u{e9}",
    "\u{1f980}",
    "x",
];

/// Text of pieces, sometimes long enough to pass the 256-byte limits.
fn framing_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::collection::vec(select(FRAMING_PIECES), 0..16).prop_map(|p| p.concat()),
        1 => any::<String>(),
        1 => (250usize..=260, select(FRAMING_PIECES))
            .prop_map(|(n, tail)| format!("{}{tail}", "x".repeat(n))),
    ]
}

/// Like [`framing_text`], mostly without the CR, LF and NUL that ids and event types refuse.
fn line_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => framing_text().prop_map(|text| text.replace(['\r', '\n', '\0'], "")),
        1 => framing_text(),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn publish_body_property((selector, body) in publish_input()) {
        thread_local!(static HARNESS: Harness = Harness::new());
        let data = [&[selector][..], &body].concat();
        HARNESS.with(|harness| harness.publish_body(&data));
    }

    #[test]
    fn subscribe_query_property(
        flags in (any::<u8>(), prop::bool::weighted(0.75))
            .prop_map(|(flags, topic_a)| if topic_a { flags | 4 } else { flags & !4 }),
        query in subscribe_query(),
        tail in resume_bytes(),
    ) {
        thread_local!(static HARNESS: Harness = Harness::new());
        let len = u16::try_from(query.len()).expect("short query").to_le_bytes();
        let data = [&[flags, len[0], len[1]][..], &query, &tail].concat();
        HARNESS.with(|harness| harness.subscribe_query(&data));
    }

    #[test]
    fn encode_property(
        id in line_text(),
        event_type in prop::option::of(line_text()),
        retry in prop::option::of((any::<u64>(), 0u32..1_000_000_000)),
        text in framing_text(),
        json in any::<bool>(),
    ) {
        let retry = retry.map(|(secs, nanos)| Duration::new(secs, nanos));
        checks::check_encode(&id, event_type.as_deref(), retry, &text, json);
    }

    #[test]
    fn encode_property_from_bytes(data in prop::collection::vec(any::<u8>(), 0..128)) {
        checks::encode(&data);
    }
}

/// Pieces of URI templates, valid and broken.
const TEMPLATE_PIECES: &[&str] = &[
    "https://example.com/",
    "{",
    "}",
    "{id}",
    "{+path}",
    "{#f}",
    "{.e}",
    "{/a,b}",
    "{;p}",
    "{?q,r}",
    "{&x}",
    "{l*}",
    "{n:3}",
    ":",
    "*",
    ",",
    "%",
    "%2F",
    "%G1",
    "/",
    "?",
    "=",
    "&",
    "a",
    "\u{e9}",
    "!",
    "{=x}",
    " ",
];

proptest! {
    #![proptest_config(config())]

    /// Any string is a selector or a clear error, never a panic; a selector matches itself;
    /// matching any topic terminates without a panic.
    #[test]
    fn selectors_never_panic_and_match_themselves(
        template in bytes_from(TEMPLATE_PIECES, 24),
        topic in bytes_from(TEMPLATE_PIECES, 24),
    ) {
        use tower_sse_pubsub::Selector;
        let template = String::from_utf8_lossy(&template);
        let topic = String::from_utf8_lossy(&topic);
        if let Ok(selector) = Selector::new(&template) {
            prop_assert!(selector.matches(&template));
            let _ = selector.matches(&topic);
        }
    }
}
