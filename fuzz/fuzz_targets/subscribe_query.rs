//! `GET /events` from an EventSource with any query and `Last-Event-ID`: a stream or a 400,
//! never a 5xx, and no resume id changes the status. See `checks::Harness::subscribe_query`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tower_sse_pubsub_fuzz::checks::harness().subscribe_query(data);
});
