//! Helpers shared by the integration tests.

#![allow(dead_code)]

pub mod conformance;
pub mod http;
pub mod proxy;
pub mod redis_server;

/// Whether `tool` is on `PATH`. When it is not: in CI (the `CI` variable is set), the test
/// fails, since CI installs every tool; elsewhere it prints how to install it and the test skips.
pub fn tool_available(tool: &str, install_hint: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()));
    if !found {
        let in_ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
        assert!(
            !in_ci,
            "{tool} is not installed, and CI must run every test: {install_hint}"
        );
        eprintln!("skipping: {tool} is not installed; {install_hint}");
    }
    found
}
