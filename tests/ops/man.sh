#!/usr/bin/env bash
# The man page cannot drift from --help: for each sub-command, every long
# option its --help names (option lines, and the usage lines of that
# sub-command) is documented in its section of outbox-relay(1) (an option
# item, .TP), and every option item of the section is in its --help.  The
# page also renders without groff warnings (what lintian checks).
set -uo pipefail
cd "$(dirname "$0")/../.."
relay=${OBX_RELAY:-./outbox-relay}
page=scripts/man/outbox-relay.1
fail=0

# Long options of `outbox-relay SUB --help`.
help_opts() {
    local sub=$1
    local args=(--help)
    [ "$sub" = run ] || args=("$sub" --help)
    "$relay" "${args[@]}" | awk -v sub_="$sub" '
        /^ +-/ { gsub(/\([^)]*\)/, ""); print; next }   # option lines, without (remarks)
        sub_ != "run" && (/^usage:/ || /^ +outbox-relay /) && index($0, " " sub_ " ") { print }
    ' | grep -o -- '--[a-z][a-z0-9-]*' | sort -u
}

# Long options of the .TP items of section SUB (upper case) of the page.
man_opts() {
    local sec=$1
    awk -v sec="$sec" '
        /^\.SH / { insec = ($2 == sec); next }
        insec && prev == ".TP" { print }
        { prev = $1 }
    ' "$page" | sed 's/\\-/-/g' | grep -o -- '--[a-z][a-z0-9-]*' | sort -u
}

for sub in run check replay backfill anchor status; do
    sec=$(echo "$sub" | tr a-z A-Z)
    h=$(help_opts "$sub")
    m=$(man_opts "$sec")
    if [ -z "$h" ] || [ -z "$m" ]; then
        echo "FAIL man: no options found for $sub (help: $(echo $h), man: $(echo $m))"
        fail=1
        continue
    fi
    missing=$(comm -23 <(echo "$h") <(echo "$m"))
    extra=$(comm -13 <(echo "$h") <(echo "$m"))
    if [ -n "$missing" ]; then
        echo "FAIL man: $sub --help has options the page's $sec section lacks: $(echo $missing)"
        fail=1
    fi
    if [ -n "$extra" ]; then
        echo "FAIL man: the page's $sec section documents options $sub --help lacks: $(echo $extra)"
        fail=1
    fi
done

warnings=$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$page" 2>&1 >/dev/null)
if [ -n "$warnings" ]; then
    echo "FAIL man: groff warnings: $warnings"
    fail=1
fi
# the version in .TH is the binary's
v=$("$relay" --version | awk '{print $2}')
if ! grep -q "^\.TH OUTBOX-RELAY 1 .*\"outbox-relay $v\"" "$page"; then
    echo "FAIL man: .TH does not name outbox-relay $v"
    fail=1
fi
[ "$fail" = 0 ] && echo "ok man: every sub-command's --help matches its section"
exit "$fail"
