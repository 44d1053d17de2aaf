//! Every check id with its one title. `doctor` and `verify-key`
//! (provider), `probe` (provider), `node` and the agent's Lease
//! (preflight) and `cluster` (preflight) print these and no others; a test
//! keeps the ids unique.

use super::Def;

// ---------------------------------------------------------------------------
// Configuration (doctor, verify-key, preflight node)

pub const CONFIG_LOAD: Def = Def::new("config.load", "configuration file loads");
pub const CONFIG_FILE: Def = Def::new("config.file", "configuration file is a private regular file");
pub const CONFIG_VALIDATE: Def = Def::new("config.validate", "configuration is valid");

// ---------------------------------------------------------------------------
// Socket (doctor, preflight node). One rule per fact, see `node`.

pub const SOCKET_GROUP: Def = Def::new("socket.group", "server.socketGroup resolves to a numeric GID");
pub const SOCKET_DIRECTORY: Def = Def::new(
    "socket.directory",
    "socket directory has mode 2750 and the socket group",
);
/// `path_trust`: every ancestor of the state, socket and credential paths,
/// and the state file's owner (the rule `serve` fails closed on).
pub const PATHS_TRUSTED: Def = Def::new(
    "paths.trusted",
    "no symlinked, foreign-owned or writable ancestor of the state, socket and credential paths",
);
pub const SOCKET_FILE: Def = Def::new(
    "socket.file",
    "socket is a Unix socket with the configured server.socketMode and the socket group",
);

// ---------------------------------------------------------------------------
// Local auth material (doctor, verify-key)

pub const JWT_LOCAL: Def = Def::new("jwt.local", "JWT file is readable, unexpired and matches expectations");
pub const OAUTH2_LOCAL: Def = Def::new(
    "oauth2.local",
    "OAuth2 client secret file and token endpoint CA are usable",
);
pub const OAUTH2_ACQUIRE: Def = Def::new(
    "oauth2.acquire",
    "OAuth2 token endpoint grants a JWT that matches expectations",
);
pub const AUTH_CERT_LOCAL: Def = Def::new(
    "auth.cert.local",
    "client certificate and key are usable for client auth",
);
pub const AUTH_CERT_PKCS11: Def = Def::new("auth.cert.pkcs11", "PKCS#11 token, PIN and key");
pub const AUTH_CERT_SIGNER: Def = Def::new("auth.cert.signer", "token key matches the certificate");
pub const AUTH_APPROLE_LOCAL: Def = Def::new("auth.approle.local", "role ID and secret ID files are readable");
pub const AUTH_TOKEN_LOCAL: Def = Def::new("auth.token.local", "token file is readable");

// ---------------------------------------------------------------------------
// EncryptionConfiguration: doctor reports one check, preflight node three.

pub const KUBERNETES_ENCRYPTION_CONFIG: Def = Def::new(
    "kubernetes.encryption_config",
    "EncryptionConfiguration uses this provider",
);
pub const EC_PARSE: Def = Def::new("encryption_config.parse", "EncryptionConfiguration decodes strictly");
pub const EC_RULES: Def = Def::new(
    "encryption_config.rules",
    "EncryptionConfiguration passes kube-apiserver's validation",
);
pub const EC_PROVIDER: Def = Def::new(
    "encryption_config.provider",
    "EncryptionConfiguration lists this provider as kms v2 on its socket",
);

// ---------------------------------------------------------------------------
// OpenBao and Transit (doctor, verify-key)

pub const OPENBAO_TLS: Def = Def::new("openbao.tls", "TLS connection to OpenBao");
pub const OPENBAO_HEALTH: Def = Def::new("openbao.health", "OpenBao is initialised, unsealed and serves requests");
pub const OPENBAO_IDENTITY: Def = Def::new(
    "openbao.identity",
    "OpenBao cluster and Transit mount are the pinned ones",
);
pub const OPENBAO_AUTH: Def = Def::new("openbao.auth", "login to OpenBao");
pub const TRANSIT_CAPABILITIES: Def = Def::new(
    "transit.capabilities",
    "token holds exactly the provider's capabilities",
);
pub const TRANSIT_METADATA: Def = Def::new("transit.metadata", "Transit key metadata is readable");
pub const REGISTRY_STATE: Def = Def::new("registry.state", "key registry state and checkpoint");
pub const TRANSIT_PROFILE: Def = Def::new("transit.profile", "Transit key profile is safe");
pub const TRANSIT_VERSION_RESTRICTIONS: Def = Def::new(
    "transit.version_restrictions",
    "every retained version is still available and decryptable",
);
pub const TRANSIT_DISABLE_UPSERT: Def = Def::new("transit.disable_upsert", "mount refuses implicit key creation");
pub const TRANSIT_PROBE: Def = Def::new("transit.probe", "encrypt and decrypt with the active version");
pub const KEY_ID_DETERMINISTIC: Def = Def::new(
    "key_id.deterministic",
    "key_id derives the same from configuration and metadata",
);
pub const KMS_STATUS_ENCRYPT: Def = Def::new(
    "kms.status_encrypt",
    "in-process KMS Status is healthy and Encrypt agrees on its key_id",
);

// ---------------------------------------------------------------------------
// Live KMS socket (probe)

pub const KMS_SOCKET: Def = Def::new("kms.socket", "KMS socket is a socket");
pub const KMS_CALLER: Def = Def::new("kms.caller", "probe runs as kube-apiserver would");
pub const KMS_CONNECT: Def = Def::new("kms.connect", "connect to the KMS socket");
pub const KMS_STATUS: Def = Def::new("kms.status", "KMS Status is healthy");
pub const KMS_ENCRYPT: Def = Def::new("kms.encrypt", "Encrypt a 32-byte seed");
pub const KMS_DECRYPT: Def = Def::new("kms.decrypt", "Decrypt returns the seed");
pub const KMS_KEY_ID: Def = Def::new("kms.key_id", "Status and Encrypt agree on key_id");

// ---------------------------------------------------------------------------
// Static pod manifest (preflight node)

pub const MANIFEST_PARSE: Def = Def::new(
    "manifest.parse",
    "static pod manifest is a Pod with the provider container",
);
pub const MANIFEST_IMAGE: Def = Def::new("manifest.image", "provider image is pinned by digest");
pub const MANIFEST_GROUPS: Def = Def::new(
    "manifest.supplemental_groups",
    "Pod supplementalGroups contains the socket GID",
);
pub const MANIFEST_MOUNTS: Def = Def::new(
    "manifest.mounts",
    "hostPath mounts cover the socket, configuration, credential and state paths",
);
pub const MANIFEST_SECURITY: Def = Def::new(
    "manifest.security",
    "provider container runs as non-root without privilege escalation",
);

// ---------------------------------------------------------------------------
// systemd unit (preflight node --unit)

pub const UNIT_BINARY: Def = Def::new(
    "unit.binary",
    "the provider binary the systemd unit executes is found and hashed",
);

// ---------------------------------------------------------------------------
// The local provider's endpoints (preflight node)

pub const PROVIDER_READY: Def = Def::new("provider.ready", "local provider /ready answers ok");
pub const PROVIDER_STATUS: Def = Def::new(
    "provider.status",
    "local provider /status is healthy and matches the configuration",
);

// ---------------------------------------------------------------------------
// Cluster (preflight cluster, from the nodes' Leases)

pub const NODES_FOUND: Def = Def::new("nodes.found", "control-plane nodes are listed");
pub const REPORT_PRESENT: Def = Def::new("report.present", "the node publishes a report");
pub const REPORT_FRESH: Def = Def::new("report.fresh", "the node's report is fresh");
pub const NODE_CHECKS: Def = Def::new("node.checks", "every node check passes on the node");
pub const PROVIDER_HEALTHY: Def = Def::new("provider.healthy", "the node's provider is healthy");
pub const IMAGE_PRESENT: Def = Def::new("image.present", "the pinned provider image is present on the node");
pub const ARTIFACT_REPORTED: Def = Def::new(
    "artifact.reported",
    "the node reports its deployment model's artifact (image or binary digest)",
);
pub const ARTIFACT_CONVERGED: Def = Def::new(
    "artifact.converged",
    "every node of a deployment model runs the same image or binary",
);
pub const KEY_ID_CONVERGED: Def = Def::new("key_id.converged", "every node reports the same key_id hash");
pub const CONTENT_CONVERGED: Def = Def::new(
    "content.converged",
    "every node's registry holds the same keys (content digest)",
);
pub const REGISTRY_ROLLBACK: Def = Def::new(
    "registry.rollback",
    "the node's registry generation and active Transit version never went backwards",
);
pub const VERSION_CONVERGED: Def = Def::new("version.converged", "every node runs the same provider version");
pub const ROTATION_ACTIVE: Def = Def::new("rotation.active", "rotation state is active on every node");
pub const ROTATION_MOVED: Def = Def::new("rotation.moved", "every node moved to a new key_id");
/// `checks::hold`: a promotion hold (`rotation.holdAtVersion`) on a node.
pub const ROTATION_HOLD: Def = Def::new(
    "rotation.hold",
    "no node holds a pending version from promoting (rotation.holdAtVersion)",
);

// ---------------------------------------------------------------------------
// Stored objects (preflight storage gates)

pub const STORAGE_KEY_ID_HASH: Def = Def::new(
    "storage.key_id_hash",
    "every encrypted object uses the required key_id hash",
);
pub const STORAGE_MIN_VERSION: Def = Def::new(
    "storage.min_version",
    "no object needs a Transit version below the minimum",
);

/// Every entry, for the uniqueness test and documentation.
pub const ALL: &[Def] = &[
    CONFIG_LOAD,
    CONFIG_FILE,
    CONFIG_VALIDATE,
    SOCKET_GROUP,
    SOCKET_DIRECTORY,
    SOCKET_FILE,
    PATHS_TRUSTED,
    JWT_LOCAL,
    OAUTH2_LOCAL,
    OAUTH2_ACQUIRE,
    AUTH_CERT_LOCAL,
    AUTH_CERT_PKCS11,
    AUTH_CERT_SIGNER,
    AUTH_APPROLE_LOCAL,
    AUTH_TOKEN_LOCAL,
    KUBERNETES_ENCRYPTION_CONFIG,
    EC_PARSE,
    EC_RULES,
    EC_PROVIDER,
    OPENBAO_TLS,
    OPENBAO_HEALTH,
    OPENBAO_AUTH,
    OPENBAO_IDENTITY,
    TRANSIT_CAPABILITIES,
    TRANSIT_METADATA,
    REGISTRY_STATE,
    TRANSIT_PROFILE,
    TRANSIT_VERSION_RESTRICTIONS,
    TRANSIT_DISABLE_UPSERT,
    TRANSIT_PROBE,
    KEY_ID_DETERMINISTIC,
    KMS_STATUS_ENCRYPT,
    KMS_SOCKET,
    KMS_CALLER,
    KMS_CONNECT,
    KMS_STATUS,
    KMS_ENCRYPT,
    KMS_DECRYPT,
    KMS_KEY_ID,
    MANIFEST_PARSE,
    MANIFEST_IMAGE,
    MANIFEST_GROUPS,
    MANIFEST_MOUNTS,
    MANIFEST_SECURITY,
    UNIT_BINARY,
    PROVIDER_READY,
    PROVIDER_STATUS,
    NODES_FOUND,
    REPORT_PRESENT,
    REPORT_FRESH,
    NODE_CHECKS,
    PROVIDER_HEALTHY,
    IMAGE_PRESENT,
    ARTIFACT_REPORTED,
    ARTIFACT_CONVERGED,
    KEY_ID_CONVERGED,
    CONTENT_CONVERGED,
    REGISTRY_ROLLBACK,
    VERSION_CONVERGED,
    ROTATION_ACTIVE,
    ROTATION_MOVED,
    ROTATION_HOLD,
    STORAGE_KEY_ID_HASH,
    STORAGE_MIN_VERSION,
];
