#!/bin/sh
# Prints the path of a minimal Debian root that boots with systemd as PID 1
# under systemd-nspawn, building it once with debootstrap (about 35 s to 2 min)
# and reusing it afterwards. The root is cached outside the checkout, keyed by
# its suite, variant and package list, so a changed list builds a new root
# and a second run builds nothing. The booted tests never write to it
# (systemd-nspawn --volatile=overlay keeps their changes in memory).
#
#   BAO_KMS_DEBIAN_ROOT_CACHE  cache directory
#                              (default: ${XDG_CACHE_HOME:-$HOME/.cache}/bao-kms-provider/debian-root)
#   DEBIAN_MIRROR              Debian archive to bootstrap from
#                              (default: the first one apt is configured with)
set -eu

SUITE=bookworm
VARIANT=minbase
# systemd as PID 1 and its bus; curl: node-setup.sh start waits for /ready with it.
PACKAGES=systemd,systemd-sysv,dbus,curl

die() { printf 'debian-root: %s\n' "$*" >&2; exit 1; }

cache=${BAO_KMS_DEBIAN_ROOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bao-kms-provider/debian-root}
key=$(printf '%s %s %s\n' "$SUITE" "$VARIANT" "$PACKAGES" | sha256sum | cut -c1-16)
root=$cache/$SUITE-$key

if [ -x "$root/usr/lib/systemd/systemd" ]; then
    printf '%s\n' "$root"
    exit 0
fi

command -v debootstrap >/dev/null || die "debootstrap is not installed (make deps-systemd)"
[ "$(id -u)" -eq 0 ] || die "debootstrap needs root"
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
# Another run may have built it while this one waited for the lock.
if [ -x "$root/usr/lib/systemd/systemd" ]; then
    printf '%s\n' "$root"
    exit 0
fi

mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
    # deb822 sources first, then one-line sources; the main archive, not security.
    mirror=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null |
        tr ' ' '\n' | grep -v -- '-security' | grep -m1 . || true)
fi
if [ -z "$mirror" ]; then
    mirror=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
fi
[ -n "$mirror" ] || die "no Debian archive in the apt sources; set DEBIAN_MIRROR"

tmp=$cache/.build-$key-$$
rm -rf -- "$tmp"
log=$cache/$SUITE-$key.log
start=$(date +%s)
printf 'debian-root: building %s (%s, %s, +%s) from %s\n' "$root" "$SUITE" "$VARIANT" "$PACKAGES" "$mirror" >&2
if ! debootstrap --variant="$VARIANT" --include="$PACKAGES" "$SUITE" "$tmp" "$mirror" >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    rm -rf -- "$tmp"
    die "debootstrap failed; full log in $log"
fi
# No login prompt on the console of a test machine.
ln -sf /dev/null "$tmp/etc/systemd/system/console-getty.service"
mv -- "$tmp" "$root"
printf 'debian-root: built in %ss\n' "$(( $(date +%s) - start ))" >&2
printf '%s\n' "$root"
