//! The properties behind the fuzz targets, shared with the stable test suite
//! (`tests/fuzz_properties.rs` includes `checks.rs` itself).

pub mod checks;
