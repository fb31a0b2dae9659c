#!/bin/sh
# Installs what opsdb needs to build, run and test, from Debian's packages only.
# Idempotent: packages already present are skipped, and apt-get runs only when something is
# missing. Usage: scripts/install-deps.sh [build|test|fuzz]   (test adds the test tools, fuzz
# adds clang for the libFuzzer targets)
set -eu

build_pkgs="gcc make pkg-config libc6-dev libsqlite3-dev libmicrohttpd-dev libjansson-dev
libyaml-dev zlib1g-dev libzstd-dev libsodium-dev libcurl4-openssl-dev tzdata
protobuf-c-compiler libprotobuf-c-dev libsnappy-dev"
test_pkgs="libcmocka-dev python3 python3-pytest python3-requests prometheus influxdb-client
sqlite3 procps curl clang-format zstd python3-aiosmtpd prometheus-alertmanager python3-yaml
python3-snappy prometheus-node-exporter nginx bsdutils rsyslog collectd-core"
# HTTPS (libmicrohttpd over GnuTLS); the TLS tests make their CA and certificates with openssl
build_pkgs="$build_pkgs libgnutls28-dev"
test_pkgs="$test_pkgs openssl"

want=$build_pkgs
[ "${1:-build}" = test ] && want="$build_pkgs $test_pkgs"
[ "${1:-build}" = fuzz ] && want="$build_pkgs clang"

missing=""
for p in $want; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

echo "install-deps: installing$missing"
if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: these Debian packages are missing:$missing; run as root or install them" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# prometheus is wanted only for promtool; do not let its postinst start a daemon in a chroot/CI.
apt-get install -y -qq --no-install-recommends $missing >/dev/null
