//! `POST /publish` with any body under one of several content types: a clear status, never a
//! 5xx or a panic; 200 only for a UTF-8 body. See `checks::Harness::publish_body`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tower_sse_pubsub_fuzz::checks::harness().publish_body(data);
});
