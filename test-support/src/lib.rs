//! Test plumbing shared by the workspace's test suites (`tower-sse-pubsub`'s own tests and the
//! integrations'), so that each suite keeps only what is particular to it: its app, its server
//! and its scenarios.
//!
//! - [`attack`]: what hostile and broken clients do over TCP, and what it costs the server.
//! - [`comparator`]: the hand-written axum `Sse` + `broadcast` endpoint the hub is measured
//!   against.
//! - [`browser`]: finding `chromium` and `chromedriver` (and the policy for when they are
//!   missing: skip locally, fail in CI), starting chromedriver, and a minimal W3C WebDriver
//!   client to drive headless Chromium windows.
//! - [`http_client`]: a plain hyper client and a spec-compliant reader of event-stream
//!   responses.
//! - [`sse_spec`]: a reference reader of event streams, the WHATWG algorithm written out, as
//!   the oracle for the encoder's tests and fuzz target.
//! - [`tools`]: finding the programs a test needs; skip locally, fail in CI when one is missing.
//!
//! Nothing here knows `tower-sse-pubsub`: it is the client side of a test, and the hand-written
//! server it is compared with. It must stay that way, since `tower-sse-pubsub` has this crate as a dev-dependency and a dependency back would
//! be a cycle.
//!
//! Every wait is bounded ([`WAIT_LIMIT`] and the limits in [`browser`]): a test that waits for
//! something that does not happen fails with what it saw instead of hanging, and nothing sleeps
//! to synchronise.

#![warn(missing_docs)]

use std::time::Duration;

pub mod attack;
pub mod browser;
pub mod comparator;
pub mod http_client;
pub mod sse_spec;
pub mod tools;

/// How long a condition (an event to arrive, the page to show something) may take to become
/// true before the test fails.
pub const WAIT_LIMIT: Duration = Duration::from_secs(10);
