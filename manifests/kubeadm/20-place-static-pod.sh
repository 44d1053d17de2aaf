#!/bin/sh
# Step 20: place the provider's static pod manifest, rendered by
#   bao-kms-provider init --model static-pod --image <ref>@sha256:<digest> \
#     --socket-gid <GID> --values <values.yaml> --out OUT_DIR
# into the kubelet's manifest directory, atomically (write beside, then
# rename) so the kubelet never reads half a file.
#
#   20-place-static-pod.sh [--manifest-dir DIR] [--replace] OUT_DIR
#
# An identical manifest already in place is left alone. A different one is
# only replaced with --replace; the previous file is then kept as
# DIR/.bao-kms-provider.yaml.previous (the kubelet ignores dot files).
#
# Environment: KUBELET_MANIFEST_DIR (default /etc/kubernetes/manifests).
set -eu

prog=20-place-static-pod
log() { printf '%s: %s\n' "$prog" "$*"; }
die() {
	printf '%s: error: %s\n' "$prog" "$*" >&2
	exit 1
}
usage() {
	echo "usage: $prog [--manifest-dir DIR] [--replace] OUT_DIR" >&2
	exit 2
}

manifest_dir=${KUBELET_MANIFEST_DIR:-/etc/kubernetes/manifests}
replace=no
out_dir=
while [ "$#" -gt 0 ]; do
	case $1 in
	--manifest-dir)
		[ "$#" -ge 2 ] || usage
		manifest_dir=$2
		shift 2
		;;
	--replace)
		replace=yes
		shift
		;;
	-h | --help) usage ;;
	-*) usage ;;
	*)
		[ -z "$out_dir" ] || usage
		out_dir=$1
		shift
		;;
	esac
done
[ -n "$out_dir" ] || usage

name=bao-kms-provider.yaml
src=$out_dir/$name
dest=$manifest_dir/$name
[ -f "$src" ] || die "$src: no such file (run bao-kms-provider init --model static-pod --out $out_dir first)"
[ -s "$src" ] || die "$src is empty"
grep -Eq '^kind:[[:space:]]*Pod[[:space:]]*$' "$src" || die "$src is not a Pod manifest"
grep -Eq '^[[:space:]]*(-[[:space:]]+)?image:[[:space:]]*"?[^[:space:]"]+@sha256:[0-9a-f]{64}"?[[:space:]]*$' "$src" ||
	die "$src: the image is not pinned by digest (@sha256:...)"
[ -d "$manifest_dir" ] || die "$manifest_dir: not a directory (the kubelet's staticPodPath)"

if [ -e "$dest" ] || [ -L "$dest" ]; then
	if [ -L "$dest" ] || [ ! -f "$dest" ]; then
		die "$dest exists and is not a regular file; remove it by hand"
	fi
	if cmp -s "$src" "$dest"; then
		log "$dest is already this manifest; nothing to do"
		exit 0
	fi
	[ "$replace" = yes ] || die "$dest exists and differs from $src; pass --replace to replace it"
fi

tmp=$(mktemp "$manifest_dir/.$name.XXXXXX") || die "cannot create a temporary file in $manifest_dir"
trap 'rm -f "$tmp"' EXIT
cp "$src" "$tmp"
chmod 0600 "$tmp"
if [ -f "$dest" ]; then
	cp -p "$dest" "$manifest_dir/.$name.previous"
	log "kept the previous manifest as $manifest_dir/.$name.previous"
fi
mv -f "$tmp" "$dest"
trap - EXIT
log "placed $dest (mode 0600); the kubelet starts the provider pod from it"
