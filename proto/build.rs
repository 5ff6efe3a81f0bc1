//! Compiles `proto/cairn.proto` with protox (no system protoc needed) and generates the tonic code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/cairn.proto");
    let fds = protox::compile(["proto/cairn.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
