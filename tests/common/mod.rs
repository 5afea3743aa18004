//! Helpers shared by the integration tests.

#![allow(dead_code)]

pub mod chat;
pub mod http;
pub mod mercure;
pub mod nats_server;
pub mod presence;
pub mod proxy;
pub mod redis_server;

/// Whether `tool` is on `PATH`; when it is not, the test fails in CI and skips elsewhere (see
/// [`test_support::tools::require`]).
pub fn tool_available(tool: &str, install_hint: &str) -> bool {
    test_support::tools::require(&[tool], install_hint).is_some()
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}
