//! Pure rules of bao-kms-provider. No I/O: no sockets, files, clocks or
//! async runtime; every function takes its inputs (`now` included) as
//! arguments, so each rule is unit-tested on values.
//!
//! Layout, along the request path:
//! - [`config`]: the configuration file -> typed [`config::Config`]:
//!   [`config::schema`] (the published JSON Schema), [`config::raw`] (the
//!   serde view of the file), [`config::validate`] (the validation pass:
//!   schema walk, string rules, one module per section: server, openbao,
//!   auth, transit, and the runtime sections), with its problems, overrides
//!   and Go-style durations in modules of their own.
//! - [`identity`], [`keyid`], [`snapshot`], [`hash`]: the identity scope and
//!   key_id derivation (wire contract, golden vectors).
//! - [`limits`], [`annotations`], [`aad`]: what Encrypt returns and what
//!   Decrypt checks before anything reaches OpenBao; [`admission`] puts
//!   them in order: is a request admissible, and what goes to Transit.
//! - [`transit`]: Transit key metadata, profile findings, bootstrap decision.
//! - [`transit_wire`]: the OpenBao HTTP API as bytes: request bodies,
//!   answer parsers, the classification of failed answers, the
//!   `vault:v<N>:` ciphertext rule.
//! - [`registry`]: the persisted key registry (state file + checkpoint),
//!   its hash chain and rollback rules, its check against Transit metadata
//!   ([`registry::StateFile::verify_metadata`]) and the retire/restore plans.
//! - [`rotation`]: the rotation state machine driven by metadata
//!   observations (candidate, stable count, activation delay, promotion).
//! - [`reason`]: health reasons (stable code + detail) that the registry
//!   check and the rotation machine report.
//! - [`storage`]: what `bao-kms-preflight storage` found in etcd, its
//!   gates, and what the report proves to a registry.
//! - [`encryption_config`]: kube-apiserver's EncryptionConfiguration, its
//!   validation rules and the cross-check against [`config::Config`].
//! - [`connections`]: the listeners' accept backoff, its log gate, the
//!   `RLIMIT_NOFILE` target and the descriptor budget of the connection caps.
//! - [`errors`]: error classes and the one mapping to KMS status codes.
//! - [`jwt`]: local claim checks of the JWT before each login;
//!   [`certificate`]: the client certificate's validity window.
//! - [`gojson`]: Go-identical JSON bytes for every hashed body.
//! - [`policy`]: the least-privilege OpenBao policy for a configuration.
//! - [`init`]: the install files `bao-kms-provider init` writes, rendered
//!   from one values file and the templates in `manifests/`.
//!
//! Imports run one way: no file imports itself through others (the
//! system-test crate's `modgraph` test checks every crate of the
//! workspace). The leaves are `hash`, `gojson`, `limits`, `errors`, `jwt`,
//! `certificate`,
//! `transit` and `reason`; `registry` builds on `identity`, `keyid` and
//! `snapshot`; `rotation` on `registry`, `transit` and `config`; `storage`
//! on `registry` and `hash`.

pub mod aad;
pub mod admission;
pub mod annotations;
pub mod certificate;
pub mod checks;
pub mod config;
pub mod connections;
pub mod encryption_config;
pub mod errors;
pub mod gojson;
pub mod hash;
pub mod identity;
pub mod init;
pub mod jwt;
pub mod keyid;
pub mod last_exit;
pub mod limits;
pub mod log_budget;
pub mod path_trust;
pub mod policy;
pub mod reason;
pub mod registry;
pub mod rotation;
pub mod snapshot;
pub mod status;
pub mod storage;
pub mod transit;
pub mod transit_wire;
