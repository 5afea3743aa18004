//! Any event the constructors accept encodes to a frame that the WHATWG reference reader reads
//! back as exactly that event. See `checks::encode`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tower_sse_pubsub_fuzz::checks::encode(data);
});
