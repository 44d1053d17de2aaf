#!/bin/sh
# Step 60: cluster-wide check with `bao-kms-preflight cluster`: every
# control-plane node's report is fresh and all agree on one key_id hash,
# generation and version. Run it after each node, before the next.
#
#   60-cluster.sh [--phase before-rotation|after-rotation] [-- EXTRA ARGS]
#
# EXTRA ARGS go to bao-kms-preflight cluster (--kubeconfig, --context, -n,
# --max-age, -o ...).
#
# Environment: PREFLIGHT (default bao-kms-preflight).
set -eu

prog=60-cluster
log() { printf '%s: %s\n' "$prog" "$*"; }
die() {
	printf '%s: error: %s\n' "$prog" "$*" >&2
	exit 1
}
usage() {
	echo "usage: $prog [--phase before-rotation|after-rotation] [-- ARGS]" >&2
	exit 2
}

PREFLIGHT=${PREFLIGHT:-bao-kms-preflight}
set_phase=
while [ "$#" -gt 0 ]; do
	case $1 in
	--phase)
		[ "$#" -ge 2 ] || usage
		set_phase=$2
		shift 2
		;;
	--)
		shift
		break
		;;
	*) usage ;;
	esac
done

if [ -n "$set_phase" ]; then
	set -- cluster --phase "$set_phase" "$@"
else
	set -- cluster "$@"
fi
log "running $PREFLIGHT $*"
rc=0
"$PREFLIGHT" "$@" || rc=$?
case $rc in
0) log "cluster check passed" ;;
2) die "bao-kms-preflight rejected the arguments (exit 2)" ;;
*) die "cluster check failed (exit $rc); do not continue to the next node" ;;
esac
