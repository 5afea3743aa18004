//! Generates the app's own gRPC code (`greeter.v1`) with the protoc that `protoc-bin-vendored`
//! ships, so the crate builds on a machine without protoc installed. The hub's `pubsub.v1` code
//! comes generated with the library (feature `grpc`).

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    let mut config = tonic_prost_build::Config::new();
    // Passed to prost-build directly: setting PROTOC with `std::env::set_var` would need `unsafe`
    // in edition 2024.
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().compile_with_config(
        config,
        &["proto/greeter.proto"],
        &["proto"],
    )?;
    Ok(())
}
