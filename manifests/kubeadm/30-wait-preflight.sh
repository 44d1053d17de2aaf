#!/bin/sh
# Step 30: wait until `bao-kms-preflight node` passes on this node: the
# provider's configuration, socket directory and socket, the static pod
# manifest, the EncryptionConfiguration and the provider's /ready and
# /status. Prints the last report and fails after the timeout.
#
#   30-wait-preflight.sh [--config F] [--manifest F|none] [--encryption-config F|none]
#                        [--timeout SECONDS] [--interval SECONDS] [-- EXTRA PREFLIGHT ARGS]
#
# Defaults are the node paths. A default file that does not exist yet is
# left out (e.g. the EncryptionConfiguration before step 40, or the
# manifest in the systemd model); a file given explicitly must exist.
#
# Environment: PREFLIGHT (default bao-kms-preflight).
set -eu

prog=30-wait-preflight
log() { printf '%s: %s\n' "$prog" "$*"; }
die() {
	printf '%s: error: %s\n' "$prog" "$*" >&2
	exit 1
}
usage() {
	echo "usage: $prog [--config F] [--manifest F|none] [--encryption-config F|none] [--timeout S] [--interval S] [-- ARGS]" >&2
	exit 2
}

PREFLIGHT=${PREFLIGHT:-bao-kms-preflight}
config=/etc/openbao-kms/config.yaml
manifest=/etc/kubernetes/manifests/bao-kms-provider.yaml
manifest_given=no
ec=/etc/kubernetes/openbao-kms/encryption-config.yaml
ec_given=no
timeout=180
interval=5
while [ "$#" -gt 0 ]; do
	case $1 in
	--config | --manifest | --encryption-config | --timeout | --interval)
		[ "$#" -ge 2 ] || usage
		case $1 in
		--config) config=$2 ;;
		--manifest) manifest=$2 manifest_given=yes ;;
		--encryption-config) ec=$2 ec_given=yes ;;
		--timeout) timeout=$2 ;;
		--interval) interval=$2 ;;
		esac
		shift 2
		;;
	--)
		shift
		break
		;;
	*) usage ;;
	esac
done
case $timeout$interval in *[!0-9]*) die "--timeout and --interval take whole seconds" ;; esac
[ "$interval" -gt 0 ] || die "--interval must be at least 1"

[ -e "$config" ] || die "$config: no such file (the provider configuration)"
set -- node --config "$config" "$@"
for pair in "manifest:$manifest:$manifest_given" "encryption-config:$ec:$ec_given"; do
	flag=${pair%%:*}
	rest=${pair#*:}
	path=${rest%:*}
	given=${rest##*:}
	if [ "$path" = none ]; then
		continue
	elif [ -e "$path" ]; then
		set -- "$@" "--$flag" "$path"
	elif [ "$given" = yes ]; then
		die "$path: no such file (--$flag)"
	else
		log "$path does not exist yet; checking without --$flag"
	fi
done

log "running $PREFLIGHT $* until it passes (timeout ${timeout}s)"
start=$(date +%s)
while :; do
	rc=0
	report=$("$PREFLIGHT" "$@" 2>&1) || rc=$?
	now=$(date +%s)
	if [ "$rc" -eq 0 ]; then
		printf '%s\n' "$report"
		log "preflight passed after $((now - start))s"
		exit 0
	fi
	case $rc in
	2 | 126 | 127)
		printf '%s\n' "$report" >&2
		die "preflight cannot run (exit $rc); waiting will not help"
		;;
	esac
	if [ $((now - start)) -ge "$timeout" ]; then
		printf '%s\n' "$report" >&2
		die "preflight still failing after ${timeout}s (exit $rc); the last report is above"
	fi
	sleep "$interval"
done
