//! Pure rules of bao-kms-provider. No I/O: no sockets, files, clocks or
//! async runtime; every function takes its inputs (`now` included) as
//! arguments, so each rule is unit-tested on values.
//!
//! Layout, along the request path:
//! - [`config`]: strict schema, defaults, validation -> typed [`config::Config`].
//! - [`identity`], [`keyid`], [`snapshot`], [`hash`]: the identity scope and
//!   key_id derivation (wire contract, golden vectors).
//! - [`limits`], [`annotations`], [`aad`]: what Encrypt returns and what
//!   Decrypt checks before anything reaches OpenBao.
//! - [`transit`]: Transit key metadata, profile findings, bootstrap decision.
//! - [`registry`]: the persisted key registry (state file + checkpoint),
//!   its hash chain and rollback rules.
//! - [`rotation`]: the rotation state machine driven by metadata
//!   observations (candidate, stable count, activation delay, promotion).
//! - [`encryption_config`]: kube-apiserver's EncryptionConfiguration, its
//!   validation rules and the cross-check against [`config::Config`].
//! - [`errors`]: error classes and the one mapping to KMS status codes.
//! - [`gojson`]: Go-identical JSON bytes for every hashed body.
//! - [`policy`]: the least-privilege OpenBao policy for a configuration.
//! - [`init`]: the install files `bao-kms-provider init` writes, rendered
//!   from one values file and the templates in `manifests/`.

pub mod aad;
pub mod annotations;
pub mod config;
pub mod encryption_config;
pub mod errors;
pub mod gojson;
pub mod hash;
pub mod identity;
pub mod init;
pub mod jwt;
pub mod keyid;
pub mod limits;
pub mod policy;
pub mod reason;
pub mod registry;
pub mod rotation;
pub mod snapshot;
pub mod transit;
