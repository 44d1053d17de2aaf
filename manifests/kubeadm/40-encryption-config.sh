#!/bin/sh
# Step 40: give kube-apiserver the EncryptionConfiguration rendered by
# `bao-kms-provider init` and a kubeadm patch that wires it in.
#
#   40-encryption-config.sh --phase 1|2 [--dest FILE] [--patches-dir DIR]
#                           [--socket-dir DIR] OUT_DIR
#
# Phase 1 places OUT_DIR/encryption-config-readers.yaml (the old provider
# first, KMS second: every API server can read KMS data before any writes
# it). Phase 2 places OUT_DIR/encryption-config.yaml (KMS first: new writes
# use KMS). Roll every API server between the phases (docs/install.md).
#
# The file goes to --dest (default
# /etc/kubernetes/openbao-kms/encryption-config.yaml, mode 0600, replaced
# atomically). The patch goes to DIR/kube-apiserver+strategic.yaml
# (default DIR /etc/kubernetes/openbao-kms/patches) for
# `kubeadm init|join|upgrade ... --patches DIR`. It appends
# --encryption-provider-config through the container's `args` (a strategic
# merge replaces `command` as a whole, while kubeadm leaves `args` unset)
# and mounts the file's directory (read-only) and the socket directory
# (--socket-dir, default /run/openbao-kms).
# Directories, not files, are mounted so an atomic replacement is seen.
set -eu

prog=40-encryption-config
log() { printf '%s: %s\n' "$prog" "$*"; }
die() {
	printf '%s: error: %s\n' "$prog" "$*" >&2
	exit 1
}
usage() {
	echo "usage: $prog --phase 1|2 [--dest FILE] [--patches-dir DIR] [--socket-dir DIR] OUT_DIR" >&2
	exit 2
}

phase=
dest=/etc/kubernetes/openbao-kms/encryption-config.yaml
patches_dir=/etc/kubernetes/openbao-kms/patches
socket_dir=/run/openbao-kms
out_dir=
while [ "$#" -gt 0 ]; do
	case $1 in
	--phase | --dest | --patches-dir | --socket-dir)
		[ "$#" -ge 2 ] || usage
		case $1 in
		--phase) phase=$2 ;;
		--dest) dest=$2 ;;
		--patches-dir) patches_dir=$2 ;;
		--socket-dir) socket_dir=$2 ;;
		esac
		shift 2
		;;
	-*) usage ;;
	*)
		[ -z "$out_dir" ] || usage
		out_dir=$1
		shift
		;;
	esac
done
[ -n "$out_dir" ] || usage
case $phase in
1) src=$out_dir/encryption-config-readers.yaml ;;
2) src=$out_dir/encryption-config.yaml ;;
*) die "--phase must be 1 (readers: old provider first) or 2 (KMS first)" ;;
esac
case $dest in /*) ;; *) die "--dest must be an absolute path" ;; esac
[ -f "$src" ] || die "$src: no such file (run bao-kms-provider init --out $out_dir first)"
grep -Eq '^kind:[[:space:]]*EncryptionConfiguration[[:space:]]*$' "$src" ||
	die "$src is not an EncryptionConfiguration"
grep -Eq 'kms:' "$src" || die "$src has no kms provider"

# Moves the finished temp file $1 over $2 (an atomic rename), unless $2
# already has the same content.
place() {
	if [ -f "$2" ] && cmp -s "$1" "$2"; then
		rm -f "$1"
		log "$2 is unchanged"
	else
		mv -f "$1" "$2"
		log "wrote $2"
	fi
}

dest_dir=$(dirname "$dest")
mkdir -p "$dest_dir" "$patches_dir"
tmp=$(mktemp "$dest_dir/.encryption-config.XXXXXX")
trap 'rm -f "$tmp"' EXIT
cp "$src" "$tmp"
chmod 0600 "$tmp"
place "$tmp" "$dest"

patch=$patches_dir/kube-apiserver+strategic.yaml
tmp=$(mktemp "$patches_dir/.kube-apiserver.XXXXXX")
cat >"$tmp" <<PATCH
# kubeadm patch (kubeadm ... --patches $patches_dir): kube-apiserver reads
# its EncryptionConfiguration and reaches the KMS provider's socket.
spec:
  containers:
    - name: kube-apiserver
      args:
        - --encryption-provider-config=$dest
      volumeMounts:
        - name: openbao-kms-encryption-config
          mountPath: $dest_dir
          readOnly: true
        - name: openbao-kms-socket
          mountPath: $socket_dir
  volumes:
    - name: openbao-kms-encryption-config
      hostPath:
        path: $dest_dir
        type: Directory
    - name: openbao-kms-socket
      hostPath:
        path: $socket_dir
        type: Directory
PATCH
chmod 0644 "$tmp"
place "$tmp" "$patch"
trap - EXIT
log "phase $phase in place; next: kubeadm ... --patches $patches_dir (or restart kube-apiserver if already patched), on every control-plane node, one at a time"
