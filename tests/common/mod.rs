//! Helpers shared by the integration tests.

#![allow(dead_code)]

pub mod conformance;
pub mod http;
pub mod proxy;
pub mod redis_server;

/// Whether `tool` is on `PATH`; when it is not, the test fails in CI and skips elsewhere (see
/// [`test_support::tools::require`]).
pub fn tool_available(tool: &str, install_hint: &str) -> bool {
    test_support::tools::require(&[tool], install_hint).is_some()
}
