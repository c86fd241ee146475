#!/usr/bin/env bash
# The Debian package: `make deb` builds it, lintian finds no error or
# warning, `dpkg -i` installs it (binary, man page, conffile, unit not
# enabled, SQL), the installed relay answers --version, `check` fails
# cleanly without a database and passes against a throwaway cluster set up
# from the installed SQL, and `dpkg --purge` leaves none of its files behind.
#
# Needs root (CI is root on a throwaway machine); skipped otherwise.  Holds
# a lock so two runs on one machine do not install over each other.
set -uo pipefail
cd "$(dirname "$0")/../.."
root_dir=$(pwd)
if [ "$(id -u)" != 0 ]; then
    echo "skip deb: not root"
    exit 0
fi
exec 9>/tmp/outbox-relay-deb-test.lock
flock 9

tmp=$(mktemp -d)
chmod 755 "$tmp"
mb_pid=
installed=0
cleanup() {
    [ -n "$mb_pid" ] && kill "$mb_pid" 2>/dev/null
    bash scripts/pgtmp stop "$tmp/pg" >/dev/null 2>&1
    if [ "$installed" = 1 ]; then
        dpkg --purge outbox-relay >/dev/null 2>&1
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
    echo "FAIL deb: $*"
    exit 1
}
# dpkg waits for nobody: retry while another install holds its lock
dpkg_retry() {
    local i
    for i in $(seq 1 60); do
        if dpkg "$@" >"$tmp/dpkg.log" 2>&1; then return 0; fi
        grep -q "lock" "$tmp/dpkg.log" || { cat "$tmp/dpkg.log"; return 1; }
        sleep 2
    done
    cat "$tmp/dpkg.log"
    return 1
}

if dpkg-query -W -f='${Status}' outbox-relay 2>/dev/null | grep -q 'installed'; then
    fail "outbox-relay is already installed on this machine: remove it first (dpkg --purge outbox-relay)"
fi

deb=$(bash scripts/deb/build ./outbox-relay "$tmp/deb") || fail "scripts/deb/build failed"
version=$(./outbox-relay --version | awk '{print $2}')
[ "$(basename "$deb")" = "outbox-relay_${version}_$(dpkg --print-architecture).deb" ] ||
    fail "unexpected package name $deb"
lintian --tag-display-limit 0 --fail-on error,warning "$deb" >"$tmp/lintian.log" 2>&1 ||
    fail "lintian: $(grep -v 'root privileges' "$tmp/lintian.log")"
dpkg-deb -f "$deb" Depends | grep -q 'libpq5' || fail "Depends lacks libpq5: $(dpkg-deb -f "$deb" Depends)"
for lib in librdkafka1 libjansson4 libbsd0 libmicrohttpd12; do
    dpkg-deb -f "$deb" Depends | grep -q "$lib" || fail "Depends lacks $lib"
done
files=$(dpkg-deb -c "$deb" | awk '{print substr($6, 2)}' | grep -v '/$')

dpkg_retry -i "$deb" || fail "dpkg -i failed"
installed=1
[ "$(/usr/bin/outbox-relay --version)" = "outbox-relay $version" ] || fail "installed --version"
man -w outbox-relay >/dev/null 2>&1 || fail "man -w outbox-relay finds no page"
dpkg-query -W -f='${Conffiles}\n' outbox-relay | grep -q '/etc/outbox-relay/outbox-relay.conf' ||
    fail "/etc/outbox-relay/outbox-relay.conf is not a conffile"
[ -f /lib/systemd/system/outbox-relay.service ] || fail "no systemd unit"
grep -q '^ExecStart=/usr/bin/outbox-relay run --config /etc/outbox-relay/outbox-relay.conf' \
    /lib/systemd/system/outbox-relay.service || fail "the unit does not run the installed relay with the file"
[ ! -e /etc/systemd/system/multi-user.target.wants/outbox-relay.service ] ||
    fail "the unit was enabled by the package"
[ -f /usr/share/outbox-relay/outbox.sql ] || fail "no outbox.sql"
[ -f /usr/share/outbox-relay/envelope.schema.json ] || fail "no envelope.schema.json"

# check against a cluster set up from the installed SQL, and the mock broker
ci=$(bash scripts/pgtmp start "$tmp/pg" | tail -1) || fail "pgtmp start"
psql "$ci" -qX -v ON_ERROR_STOP=1 -f /usr/share/outbox-relay/outbox.sql >/dev/null ||
    fail "the installed outbox.sql does not load"
mkfifo "$tmp/mb.in"
"${OBX_MOCKBROKER:-build/mockbroker}" <"$tmp/mb.in" >"$tmp/mb.out" 2>&1 &
mb_pid=$!
exec 8>"$tmp/mb.in"
for _ in $(seq 1 50); do [ -s "$tmp/mb.out" ] && break; sleep 0.1; done
brokers=$(head -1 "$tmp/mb.out")
[ -n "$brokers" ] || fail "the mock broker did not start"
# check without a database: a clean failure naming it, exit 1
out=$(OUTBOX_RELAY_DBNAME='host=127.0.0.1 port=1 connect_timeout=2' OUTBOX_RELAY_BROKERS="$brokers" \
    /usr/bin/outbox-relay check --config /etc/outbox-relay/outbox-relay.conf 2>&1)
rc=$?
[ "$rc" = 1 ] || fail "check without a database: exit $rc, want 1: $out"
echo "$out" | grep -q '✗ database: cannot connect' || fail "check without a database: $out"

out=$(OUTBOX_RELAY_DBNAME="$ci" OUTBOX_RELAY_BROKERS="$brokers" OUTBOX_RELAY_CREATE_SLOT=true \
    /usr/bin/outbox-relay check --config /etc/outbox-relay/outbox-relay.conf 2>&1)
rc=$?
[ "$rc" = 0 ] || fail "check against a good set-up: exit $rc: $out"
echo "$out" | grep -q '✓ wal_level: logical' || fail "check output: $out"
exec 8>&-

dpkg_retry --remove outbox-relay || fail "dpkg --remove failed"
[ ! -e /usr/bin/outbox-relay ] || fail "/usr/bin/outbox-relay left after remove"
[ -f /etc/outbox-relay/outbox-relay.conf ] || fail "remove dropped the conffile (purge should)"
dpkg_retry --purge outbox-relay || fail "dpkg --purge failed"
installed=0
left=""
for f in $files; do
    [ -e "/$f" ] && left="$left /$f"
done
[ -e /etc/outbox-relay ] && left="$left /etc/outbox-relay"
[ -z "$left" ] || fail "files left after purge:$left"
cd "$root_dir"
echo "ok deb: $(basename "$deb") builds, is lintian clean, installs, checks, purges without a trace"
