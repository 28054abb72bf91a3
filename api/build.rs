//! Compiles the .proto files in pure Rust (protox), so no protoc is needed. The
//! public services' descriptors are kept apart for server reflection, which must not
//! advertise the internal ones.

use std::path::PathBuf;

const PUBLIC: [&str; 4] = [
    "proto/datalayer/v1/common.proto",
    "proto/datalayer/v1/kv.proto",
    "proto/datalayer/v1/admin.proto",
    "proto/datalayer/v1/timeseries.proto",
];
const INTERNAL: [&str; 3] = [
    "proto/datalayer/internal/v1/raft.proto",
    "proto/datalayer/internal/v1/replication.proto",
    "proto/datalayer/internal/v1/layered.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for p in PUBLIC.iter().chain(&INTERNAL) {
        println!("cargo:rerun-if-changed={p}");
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let public = protox::compile(PUBLIC, ["proto"])?;
    std::fs::write(
        out.join("datalayer_descriptor.bin"),
        prost::Message::encode_to_vec(&public),
    )?;
    let all = protox::compile(PUBLIC.iter().chain(&INTERNAL), ["proto"])?;
    tonic_prost_build::configure().compile_fds(all)?;
    Ok(())
}
