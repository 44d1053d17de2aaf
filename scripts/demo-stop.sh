#!/usr/bin/env bash
# make demo-stop: stops the provider and the OpenBao dev server that
# `make demo` started (from their pid files under .demo/). Logs and config
# stay for inspection; the next `make demo` starts from scratch.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# BAO_KMS_DEMO_DIR: where the demo lives (default <repo>/.demo).
DEMO="${BAO_KMS_DEMO_DIR:-$ROOT/.demo}"
QUIET=false
[ "${1:-}" = "--quiet" ] && QUIET=true

say() { "$QUIET" || printf '==> %s\n' "$*"; }

# Stops the process in pid file $1 if it is still the program named $2
# (a stale pid file must never make us signal an unrelated process).
stop_pidfile() {
	local pidfile="$1" expect="$2" pid
	[ -f "$pidfile" ] || return 0
	pid="$(cat "$pidfile")"
	if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
		tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$expect"; then
		say "stopping $expect (pid $pid)"
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			say "$expect did not exit after SIGTERM; killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	rm -f "$pidfile"
}

# The provider first, so it drains and removes its socket while OpenBao is up.
stop_pidfile "$DEMO/provider.pid" "bao-kms-provider"
stop_pidfile "$DEMO/openbao.pid" "bao server"
rm -f "$DEMO/openbao.port"
say "demo stopped"
