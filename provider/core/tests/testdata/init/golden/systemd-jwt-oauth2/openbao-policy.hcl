# bao-kms-provider policy for transit/k8s-workload-a-etcd (provider openbao-kms-workload-a)

# key metadata: versions, creation times, profile
path "transit/keys/k8s-workload-a-etcd" {
  capabilities = ["read"]
}

# encrypt with an explicit key_version (never create)
path "transit/encrypt/k8s-workload-a-etcd" {
  capabilities = ["update"]
}

# decrypt
path "transit/decrypt/k8s-workload-a-etcd" {
  capabilities = ["update"]
}

# the mount's disable_upsert setting
path "transit/config/keys" {
  capabilities = ["read"]
}

# the mount accessor pinned at bootstrap
path "sys/internal/ui/mounts/transit" {
  capabilities = ["read"]
}

# doctor's capability check
path "sys/capabilities-self" {
  capabilities = ["update"]
}

# token renewal
path "auth/token/renew-self" {
  capabilities = ["update"]
}
