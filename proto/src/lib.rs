//! Kubernetes KMS v2 gRPC API (`package v2`, service `KeyManagementService`).
//!
//! Generated from `kms/v2/api.proto` at build time. The service path is
//! `/v2.KeyManagementService/<Method>`, exactly what kube-apiserver dials.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod v2 {
    tonic::include_proto!("v2");
}

pub use v2::*;
