//! The library's committed gRPC code (`src/grpc/generated/pubsub.v1.rs`, feature `grpc`) is
//! what tonic-prost-build makes of `proto/pubsub/v1/pubsub.proto` today: regenerated here into
//! a temporary directory and compared, so the proto and the code cannot drift apart. The
//! generator lives here, not in the library, so the library's users need neither protoc nor a
//! build script.
//!
//! After changing the proto (or upgrading tonic-prost-build), rewrite the committed file with
//! `UPDATE_GENERATED=1 cargo test -p integration-tonic --test generated_code` and commit it.

use std::path::{Path, PathBuf};

fn library_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn generate(out_dir: &Path) {
    let root = library_root();
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path().expect("vendored protoc"));
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // No `connect`: it would need tonic's HTTP/2 client in the library. Clients build a
        // `tonic::transport::Channel` and pass it to `PubSubClient::new`.
        .build_transport(false)
        .emit_rerun_if_changed(false)
        .out_dir(out_dir)
        .compile_with_config(
            config,
            &[root.join("proto/pubsub/v1/pubsub.proto")],
            &[root.join("proto")],
        )
        .expect("pubsub.proto compiles");
}

#[test]
fn committed_grpc_code_matches_the_proto() {
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("pubsub-generated-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).expect("temporary directory");
    generate(&out_dir);
    let fresh = std::fs::read_to_string(out_dir.join("pubsub.v1.rs")).expect("generated code");
    std::fs::remove_dir_all(&out_dir).expect("temporary directory removed");

    let committed_path = library_root().join("src/grpc/generated/pubsub.v1.rs");
    if std::env::var_os("UPDATE_GENERATED").is_some() {
        std::fs::write(&committed_path, &fresh).expect("committed code rewritten");
        return;
    }
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    if committed != fresh {
        let line = committed
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || committed.lines().count().min(fresh.lines().count()) + 1,
                |i| i + 1,
            );
        panic!(
            "{} differs from what proto/pubsub/v1/pubsub.proto generates (first at line {line}); \
             rerun this test with UPDATE_GENERATED=1 and commit the file",
            committed_path.display()
        );
    }
}
