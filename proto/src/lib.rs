//! The protobuf APIs bao-kms-provider speaks or reads, generated at build
//! time with protox (no system `protoc`).
//!
//! - [`v2`]: the Kubernetes KMS v2 plugin API (`kms/v2/api.proto`, service
//!   `KeyManagementService`; kube-apiserver dials
//!   `/v2.KeyManagementService/<Method>`), and the `EncryptedObject`
//!   kube-apiserver stores in etcd after the `k8s:enc:kms:v2:<name>:` prefix
//!   (`kms/v2/encrypted_object.proto`).
//! - [`etcd`]: a read-only subset of etcd's v3 API (`KV.Range` and its
//!   messages, `etcd/`), the client `bao-kms-preflight storage` reads etcd
//!   with. It has no method that writes.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod codec;

pub mod v2 {
    tonic::include_proto!("v2");
}

pub use v2::*;

/// etcd v3 `KV.Range` (read-only subset of `etcdserverpb` and `mvccpb`).
pub mod etcd {
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
}
