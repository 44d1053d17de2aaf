#!/bin/sh
# Step 50: first-encrypt smoke test through the running provider's socket:
# Status, Encrypt, Decrypt of fresh random bytes, key agreement
# (`bao-kms-provider probe`). Loads no configuration or credentials.
#
#   50-smoke.sh [--socket PATH] [--pid PID | --no-apiserver] [--timeout DURATION]
#
# Run as root, it probes as kube-apiserver's own UID, GID and groups (copied
# from /proc/PID/status of the one local kube-apiserver, or --pid), which
# also proves the API server's user may reach the socket. Without a local
# kube-apiserver (or with --no-apiserver) it probes as the calling user.
#
# Environment: PROVIDER (default bao-kms-provider).
set -eu

prog=50-smoke
log() { printf '%s: %s\n' "$prog" "$*"; }
die() {
	printf '%s: error: %s\n' "$prog" "$*" >&2
	exit 1
}
usage() {
	echo "usage: $prog [--socket PATH] [--pid PID | --no-apiserver] [--timeout DURATION]" >&2
	exit 2
}

PROVIDER=${PROVIDER:-bao-kms-provider}
socket=/run/openbao-kms/kms.sock
pid=
as_apiserver=auto
timeout=10s
while [ "$#" -gt 0 ]; do
	case $1 in
	--socket | --pid | --timeout)
		[ "$#" -ge 2 ] || usage
		case $1 in
		--socket) socket=$2 ;;
		--pid) pid=$2 as_apiserver=yes ;;
		--timeout) timeout=$2 ;;
		esac
		shift 2
		;;
	--no-apiserver)
		as_apiserver=no
		shift
		;;
	*) usage ;;
	esac
done

[ -S "$socket" ] || die "$socket is not a socket: is the provider running? (systemctl status bao-kms-provider, or crictl ps --name bao-kms-provider)"

if [ "$as_apiserver" = auto ] && [ "$(id -u)" = 0 ] && command -v pgrep >/dev/null; then
	pids=$(pgrep -x kube-apiserver || true)
	case $(printf '%s\n' "$pids" | grep -c .) in
	0) log "no local kube-apiserver; probing as $(id -un)" ;;
	1) pid=$pids ;;
	*) die "more than one kube-apiserver process ($pids); pass --pid" ;;
	esac
fi

set -- "$PROVIDER" probe --socket "$socket" --timeout "$timeout"
if [ -n "$pid" ]; then
	[ "$(id -u)" = 0 ] || die "probing as kube-apiserver's user needs root"
	status=/proc/$pid/status
	[ -r "$status" ] || die "$status: no such process"
	uid=$(awk '/^Uid:/ {print $3}' "$status")
	gid=$(awk '/^Gid:/ {print $3}' "$status")
	groups=$(awk '/^Groups:/ {for (i = 2; i <= NF; i++) printf "%s%s", (i > 2 ? "," : ""), $i}' "$status")
	if [ -z "$uid" ] || [ -z "$gid" ]; then
		die "$status: cannot read Uid/Gid"
	fi
	log "probing as kube-apiserver's identity (pid $pid): uid $uid, gid $gid, groups ${groups:-none}"
	if [ -n "$groups" ]; then
		set -- setpriv --reuid "$uid" --regid "$gid" --groups "$groups" --no-new-privs -- "$@"
	else
		set -- setpriv --reuid "$uid" --regid "$gid" --clear-groups --no-new-privs -- "$@"
	fi
fi

rc=0
"$@" || rc=$?
[ "$rc" -eq 0 ] || die "the probe failed (exit $rc); see the report above"
log "smoke test passed through $socket"
