//! Compiles the `.proto` schemas with protox (a protobuf compiler in Rust), prost
//! and tonic's code generator, so building this crate needs no `protoc` on the
//! machine.

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Values in etcd (include root `proto/`) and the BrokerControl gRPC service
    // (`control/broker.proto`, include root: this crate).
    let files = ["proto/kafscale/metadata.proto", "control/broker.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["proto", "."])?;
    let out = std::env::var("OUT_DIR")?;
    tonic_prost_build::configure()
        .out_dir(Path::new(&out))
        .build_server(true)
        .build_client(true)
        // `kafscale-broker ctl --json` prints the answers as they are.
        .type_attribute(".kafscale.control.v1", "#[derive(serde::Serialize)]")
        .compile_fds(descriptors)?;
    Ok(())
}
