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
# the PostgreSQL back end: libpq to build; the tests start their own servers and pgbouncers
# (tests/e2e/pgharness.py) from the Debian binaries, so no system cluster or service is wanted
build_pkgs="$build_pkgs libpq-dev"
test_pkgs="$test_pkgs postgresql postgresql-client pgbouncer"

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
# pgbouncer's postinst starts its service (a daemon on port 6432; a failed start fails the
# install) and postgresql's starts the clusters it finds. Neither is wanted: while apt-get runs,
# a policy-rc.d refuses those two starts, unless the machine has a policy-rc.d of its own. For
# other services it keeps invoke-rc.d's own decision: an action it would not carry out comes
# in parentheses and stays refused (in a chroot, no start at all), any other is allowed.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    trap 'rm -f "$policy"' EXIT
    printf '%s\n' '#!/bin/sh' \
        '# made by opsdb scripts/install-deps.sh for the time of one apt-get install' \
        '[ "$1" = --quiet ] && shift' \
        'case "$1" in pgbouncer | pgbouncer.service | postgresql | postgresql.service) exit 101 ;; esac' \
        'case "$2" in "("*) exit 101 ;; esac' \
        'exit 0' >"$policy"
    chmod 755 "$policy"
fi
# postgresql's postinst creates and starts a cluster "main" on port 5432 unless
# createcluster.conf says create_main_cluster = false. When the file is absent (postgresql-common
# not installed yet) this script decides: it installs postgresql-common alone, which makes the
# file and no cluster, turns the main cluster off there, then installs the rest. A file that
# exists is the administrator's and is left as it is.
case " $missing " in
*" postgresql "*)
    if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
        apt-get install -y -qq --no-install-recommends postgresql-common >/dev/null
        pg_conftool /etc/postgresql-common/createcluster.conf set create_main_cluster false
        pg_common_installed=1
    fi
    ;;
esac
# prometheus is wanted only for promtool; do not let its postinst start a daemon in a chroot/CI.
apt-get install -y -qq --no-install-recommends $missing >/dev/null
# installed first on its own, postgresql-common is a dependency all the same (autoremovable)
if [ -n "${pg_common_installed:-}" ]; then
    apt-mark auto postgresql-common >/dev/null
fi
