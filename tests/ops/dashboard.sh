#!/usr/bin/env bash
# The Grafana dashboard and the alerting rules use only metric names the
# relay exports (the families cdc/metrics.c renders), and the dashboard
# shows what an operator needs: lag in bytes and seconds, events per
# second, the commit -> ack histogram, in flight, dead letters by reason,
# rewinds, reconnects, the anchors' retained WAL.
set -uo pipefail
cd "$(dirname "$0")/../.."
python3 - <<'PY'
import json, re, sys

src = open("cdc/metrics.c").read()
families = dict(re.findall(r'family(?:_u64)?\(&b,\s*"([a-z_]+)",\s*"([a-z]+)"', src))
if len(families) < 15:
    sys.exit("FAIL dashboard: found only %d metric families in cdc/metrics.c" % len(families))
exported = set()
for name, typ in families.items():
    exported.add("outbox_relay_" + name)
    if typ == "histogram":
        for s in ("_bucket", "_sum", "_count"):
            exported.add("outbox_relay_" + name + s)

def exprs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("expr", "query", "definition") and isinstance(v, str):
                yield v
            else:
                yield from exprs(v)
    elif isinstance(node, list):
        for v in node:
            yield from exprs(v)

dash = json.load(open("scripts/grafana/outbox-relay.json"))
used = set()
for e in exprs(dash):
    used.update(re.findall(r"outbox_relay_[a-z_]+", e))
rules = open("scripts/prometheus/outbox-relay.rules.yml").read()
rule_exprs = re.findall(r"^\s*expr:\s*(.+)$", rules, re.M)
rule_used = set()
for e in rule_exprs:
    rule_used.update(re.findall(r"outbox_relay_[a-z_]+", e))

bad = sorted(used - exported)
if bad:
    sys.exit("FAIL dashboard: the dashboard uses metrics the relay does not export: %s" % bad)
bad = sorted(rule_used - exported)
if bad:
    sys.exit("FAIL dashboard: the alerting rules use metrics the relay does not export: %s" % bad)

need = ["replication_lag_bytes", "replication_lag_seconds", "events_published_total",
        "commit_to_ack_seconds_bucket", "inflight_events", "events_dead_lettered_total",
        "rewinds_total", "reconnects_total", "anchor_retained_wal_bytes"]
missing = [n for n in need if "outbox_relay_" + n not in used]
if missing:
    sys.exit("FAIL dashboard: nothing shows %s" % missing)
ids = [p["id"] for p in dash["panels"]]
if len(ids) != len(set(ids)):
    sys.exit("FAIL dashboard: duplicate panel ids")
for p in dash["panels"]:
    if p["type"] != "row" and not p.get("targets"):
        sys.exit("FAIL dashboard: panel %r has no query" % p["title"])
print("ok dashboard: %d panels and %d rules use only the relay's %d metric names"
      % (len(ids), len(rule_exprs), len(exported)))
PY
