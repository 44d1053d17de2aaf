//! Compiles the protos with protox (pure Rust), so no system `protoc` is
//! needed: the KMS v2 plugin API and the stored `EncryptedObject`
//! (`kms/v2/`, client and server), and the read-only etcd v3 KV subset
//! (`etcd/`, client only).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for file in [
        "kms/v2/api.proto",
        "kms/v2/encrypted_object.proto",
        "etcd/etcdserverpb/rpc.proto",
        "etcd/mvccpb/kv.proto",
    ] {
        println!("cargo:rerun-if-changed={file}");
    }
    let kms = protox::compile(["kms/v2/api.proto", "kms/v2/encrypted_object.proto"], ["."])?;
    // A request the server cannot decode is INVALID_ARGUMENT (src/codec.rs).
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::codec::KmsCodec")
        .compile_fds(kms)?;
    let etcd = protox::compile(["etcd/etcdserverpb/rpc.proto"], ["."])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(etcd)?;
    Ok(())
}
