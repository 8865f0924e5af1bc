//! Compiles `proto/*.proto` with protox (a protobuf compiler in Rust) and prost,
//! so building this crate needs no `protoc` on the machine.

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/kafscale/metadata.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    let out = std::env::var("OUT_DIR")?;
    prost_build::Config::new()
        .out_dir(Path::new(&out))
        .compile_fds(descriptors)?;
    Ok(())
}
