#!/usr/bin/env bash
# The Prometheus alerting rules: promtool accepts them, and its unit tests
# (scripts/prometheus/outbox-relay.rules.test.yml) see each alert fire on
# the series made to break it and stay quiet otherwise.
set -uo pipefail
cd "$(dirname "$0")/../../scripts/prometheus"
command -v promtool >/dev/null || { echo "FAIL alerts: no promtool: run scripts/install-deps"; exit 1; }
out=$(promtool check rules outbox-relay.rules.yml 2>&1) || { echo "FAIL alerts: promtool check rules: $out"; exit 1; }
out=$(promtool test rules outbox-relay.rules.test.yml 2>&1) || { echo "FAIL alerts: promtool test rules: $out"; exit 1; }
# every alert of the rules has a test that expects it to fire
for a in $(awk '/- alert:/ {print $3}' outbox-relay.rules.yml); do
    if ! awk -v a="$a" '$1 == "alertname:" && $2 == a {f = 1} f && /exp_labels:/ {ok = 1; exit} $1 == "alertname:" && $2 != a {f = 0} END {exit !ok}' outbox-relay.rules.test.yml; then
        echo "FAIL alerts: no test expects $a to fire"
        exit 1
    fi
    if ! grep -A2 "alertname: $a\$" outbox-relay.rules.test.yml | grep -q 'exp_alerts: \[\]'; then
        echo "FAIL alerts: no test expects $a to stay quiet"
        exit 1
    fi
done
echo "ok alerts: promtool checks the rules and their unit tests pass (every alert fires and stays quiet)"
