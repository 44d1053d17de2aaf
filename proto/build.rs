//! Compiles `kms/v2/api.proto` with protox (pure Rust), so no system `protoc`
//! is needed, and generates the tonic client and server.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=kms/v2/api.proto");
    let fds = protox::compile(["kms/v2/api.proto"], ["."])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
