#!/usr/bin/env python3
"""Checks the files under deploy/ against each other and against the metrics contract.

    python3 deploy/check.py          # exit 0: all good; 1: a problem (each one printed)

Always (needs Python 3.11+ and PyYAML):
- every YAML file parses, the dashboard JSON parses;
- every metric name used in alerts.yml, its unit tests and the dashboard is one the services
  expose (METRICS below, the contract in deploy/README.md), used with labels it has and
  label values from its closed sets;
- alert rules have `for`, a severity and summary/description annotations; the dashboard has
  its uid, schema version, variables and rows, unique panel ids, no overlapping panels, and
  uses every contract metric;
- configuration keys set in the ConfigMap and by EWN__* variables exist in
  deploy/config/ewn.example.toml (unknown keys stop the services), apart from the few keys
  listed in PENDING_KEYS;
- compose, Prometheus and Kubernetes agree on service names, ports, job names and labels;
  the Deployments keep their security settings; secrets are files, never variables.

When the tools are installed (skipped with a note otherwise): `promtool check config`,
`promtool check rules`, `promtool test rules`, every dashboard query through promtool's
parser, `kubectl kustomize` and `kubernetes-validate` on the rendered manifests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

try:
    import yaml
except ImportError:  # pragma: no cover
    sys.exit("deploy/check.py needs PyYAML: pip install pyyaml")

DEPLOY = Path(__file__).resolve().parent

# ----------------------------------------------------------------------------- the contract
# name -> (type, labels), from the code: `ewn metrics --format json` prints every family the
# services register. The binary is $EWN_BIN when set (make lint builds it), else
# `cargo run -p ewn` from the repository. Label values of the closed sets are in CLOSED.
ROOT = DEPLOY.parent


def load_metrics() -> tuple[dict[str, tuple[str, set[str]]], dict[str, set[str]]]:
    """Every metric the services export, and the services that export each."""
    binary = os.environ.get("EWN_BIN")
    cmd = ([binary] if binary else
           ["cargo", "run", "--quiet", "--locked", "-p", "ewn", "--"]) + ["metrics", "--format", "json"]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    except OSError as e:
        sys.exit(f"deploy/check.py: cannot run `{' '.join(cmd)}`: {e} (set EWN_BIN to the ewn binary)")
    if proc.returncode != 0:
        sys.exit(f"deploy/check.py: `{' '.join(cmd)}` failed:\n{proc.stderr}")
    metrics: dict[str, tuple[str, set[str]]] = {}
    services: dict[str, set[str]] = {}
    for line in proc.stdout.splitlines():
        m = json.loads(line)
        metrics[m["name"]] = (m["type"], set(m["labels"]))
        services[m["name"]] = set(m["services"])
    if not metrics:
        sys.exit(f"deploy/check.py: `{' '.join(cmd)}` printed no metrics")
    return metrics, services


METRICS, METRIC_SERVICES = load_metrics()
# Families the dashboard need not show, with why.
NOT_ON_DASHBOARD = {
    "ewn_kafka_statistics_total": "a liveness signal of the statistics callback, for debugging",
    "process_max_fds": "a limit, not a signal (open_fds is shown)",
    "process_start_time_seconds": "restarts are visible as resets of every counter",
    "process_virtual_memory_bytes": "resident memory is the signal; virtual size is noise",
}
# Series Prometheus makes itself that the rules and dashboard may use.
BUILTIN_SERIES = {"up": set()}
# Labels Prometheus attaches to every scraped series (prometheus.yml, prometheus-k8s.yml).
TARGET_LABELS = {"job", "instance", "namespace", "pod", "node", "network"}

REJECT_REASONS = {
    "undecodable", "oversized", "unknown_key", "bad_signature", "key_state_mismatch",
    "topic_mismatch", "key_revoked", "key_expired", "duplicate", "clock_skew", "too_old",
    "invalid", "late", "future", "state_limit", "key_not_yet_valid",
}
CHANNELS = {"webhook", "stream", "console"}
CLOSED: dict[tuple[str, str], set[str]] = {
    ("ewn_processor_incidents_rejected_total", "reason"): REJECT_REASONS,
    ("ewn_processor_heartbeats_rejected_total", "reason"): REJECT_REASONS,
    ("ewn_gateway_heartbeats_total", "outcome"): {"confirmed", "failed", "not_built"},
    ("ewn_processor_alerts_total", "msg_type"): {"ALERT", "UPDATE", "CANCEL"},
    ("ewn_processor_alerts_total", "level"): {"LOW", "MEDIUM", "HIGH", "CRITICAL"},
    ("ewn_processor_rule_reloads_total", "outcome"): {"ok", "error"},
    ("ewn_processor_alert_limits_total", "limit"): {"EVENTS_PER_KEY", "AREAS", "STATES", "ALERT_BYTES",
                                                    "KEY_EVICTED"},
    ("ewn_fanout_deliveries_total", "channel"): CHANNELS,
    ("ewn_fanout_deliveries_total", "outcome"): {"delivered", "dead_letter", "endpoint_gone"},
    ("ewn_fanout_delivery_retries_total", "channel"): CHANNELS,
    ("ewn_fanout_delivery_seconds", "channel"): CHANNELS,
    ("ewn_fanout_withheld_total", "tlp"): {"CLEAR", "GREEN", "AMBER", "AMBER_STRICT", "RED"},
    ("ewn_fanout_retry_records_refused_total", "reason"): {"undecodable", "unauthenticated", "bad_alert"},
    ("ewn_fanout_oversight_reads_total", "endpoint"): {"receipts", "audit"},
    ("ewn_fanout_oversight_reads_total", "outcome"): {"served", "deadline", "busy", "bad_request", "unlogged",
                                                      "failed"},
    ("ewn_fanout_oversight_read_seconds", "endpoint"): {"receipts", "audit"},
    ("ewn_gateway_intake_reports_total", "via"): {"http", "file"},
    ("ewn_gateway_intake_reports_total", "outcome"): {"accepted", "invalid", "spool_full", "error"},
    ("ewn_gateway_key_reloads_total", "outcome"): {"rotated", "refused"},
    ("ewn_gateway_drop_files_total", "outcome"): {"done", "rejected"},
}
HIST_SUFFIXES = ("_bucket", "_sum", "_count")

# EWN__* keys the deploy files may set before deploy/config/ewn.example.toml lists them: a
# note is printed for each. Empty: every key the deploy files set is in the example.
PENDING_KEYS: set[str] = set()

# Role -> admin/metrics port and the variable that sets its listen address; the fan-out API.
PORTS = {"ewn-process": 9101, "ewn-fanout": 9102, "ewn-gateway": 9103}
ADMIN_LISTEN_VAR = {
    "ewn-process": "EWN__PROCESS__ADMIN__LISTEN",
    "ewn-fanout": "EWN__FANOUT__ADMIN__LISTEN",
    "ewn-gateway": "EWN__GATEWAY__ADMIN__LISTEN",
}
FANOUT_API_PORT = 8080

problems: list[str] = []
notes: list[str] = []
checks = 0


def problem(where: str, what: str) -> None:
    problems.append(f"{where}: {what}")


def check(ok: bool, where: str, what: str) -> bool:
    global checks
    checks += 1
    if not ok:
        problem(where, what)
    return ok


def rel(p: Path) -> str:
    return str(p.relative_to(DEPLOY.parent)) if p.is_relative_to(DEPLOY.parent) else str(p)


# ----------------------------------------------------------------------------- PromQL names
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^{}]*)\}")
_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*")')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_TOKEN = re.compile(
    r"(?P<num>(?:\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?:ms|[smhdwy])?)|0x[0-9a-fA-F]+)"
    r"|(?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    r"|(?P<other>.)",
    re.S,
)
KEYWORDS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
    "group_left", "group_right", "inf", "nan", "atan2",
    # aggregation operators, which may be followed by `by (...)` rather than `(`
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}


def series_labels(name: str) -> set[str] | None:
    """Labels of a series name, or None when the name is not one the services expose."""
    if name in BUILTIN_SERIES:
        return BUILTIN_SERIES[name]
    if name in METRICS:
        kind, labels = METRICS[name]
        return None if kind == "histogram" else labels
    for suffix in HIST_SUFFIXES:
        base = name.removesuffix(suffix)
        if base != name and METRICS.get(base, ("",))[0] == "histogram":
            return METRICS[base][1] | ({"le"} if suffix == "_bucket" else set())
    return None


def check_promql(expr: str, where: str, used: set[str] | None = None) -> None:
    """Checks the series names, label names and closed label values in one expression."""
    global checks
    names: set[str] = set()
    # Selectors with matchers: the name is checked below; here the matchers.
    for m in _SELECTOR.finditer(expr):
        name, body = m.group(1), m.group(2)
        if name in KEYWORDS:  # `by {`, impossible in PromQL; guards against misparsing
            continue
        for lm in _MATCHER.finditer(body):
            label, op, value = lm.group(1), lm.group(2), json.loads(lm.group(3))
            if label == "__name__":
                continue
            if name:
                labels = series_labels(name)
                if labels is not None:
                    check(label in labels | TARGET_LABELS, where,
                          f"{name} has no label {label!r}")
                closed = CLOSED.get((name.removesuffix("_bucket"), label))
                if closed and op in ("=", "!=", "=~", "!~"):
                    if op in ("=~", "!~") and not re.fullmatch(r"[A-Za-z0-9_|]+", value):
                        continue  # a real regex: not checkable value by value
                    for v in value.split("|") if op in ("=~", "!~") else [value]:
                        check(v in closed, where,
                              f"{name}{{{label}}}: {v!r} is not one of {sorted(closed)}")
    stripped = _STRING.sub('""', expr)
    stripped = re.sub(r"\{[^{}]*\}", " ", stripped)
    stripped = re.sub(r"\[[^\[\]]*\]", " ", stripped)
    grouping_labels: set[str] = set()
    for g in _GROUPING.finditer(stripped):
        grouping_labels |= {x.strip() for x in g.group(2).split(",") if x.strip()}
    stripped = _GROUPING.sub(r" \1 ", stripped)
    tokens = [t for t in _TOKEN.finditer(stripped)]
    for i, t in enumerate(tokens):
        ident = t.group("ident")
        if not ident or ident in KEYWORDS:
            continue
        rest = stripped[t.end():].lstrip()
        if rest.startswith("("):
            continue  # a function or aggregation
        names.add(ident)
    all_labels = set(TARGET_LABELS)
    for name in names:
        labels = series_labels(name)
        if check(labels is not None, where, f"{name!r} is not a metric the services expose"
                 + (" (a histogram: use _bucket, _sum or _count)" if name in METRICS else "")):
            all_labels |= labels
            if used is not None:
                base = name
                for suffix in HIST_SUFFIXES:
                    if METRICS.get(name.removesuffix(suffix), ("",))[0] == "histogram":
                        base = name.removesuffix(suffix)
                used.add(base)
    for label in grouping_labels:
        check(label in all_labels, where,
              f"groups by {label!r}, which none of its series {sorted(names)} has")


# ----------------------------------------------------------------------------- helpers
class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml_docs(path: Path) -> list:
    try:
        with path.open() as f:
            return [d for d in yaml.load_all(f, Loader=StrictLoader) if d is not None]
    except yaml.YAMLError as e:
        problem(rel(path), f"does not parse as YAML: {e}")
        return []


def run(cmd: list[str], where: str, cwd: Path | None = None) -> str | None:
    """Runs a tool; a non-zero exit is a problem. Returns its output."""
    global checks
    checks += 1
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    out = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        problem(where, f"`{' '.join(cmd)}` failed:\n    " + out.replace("\n", "\n    "))
        return None
    return out


def example_keys() -> set[str]:
    """Every key of deploy/config/ewn.example.toml, dotted, including commented-out ones."""
    text = (DEPLOY / "config" / "ewn.example.toml").read_text()
    keys: set[str] = set()

    def walk(prefix: str, table: dict) -> None:
        for k, v in table.items():
            key = f"{prefix}{k}"
            keys.add(key)
            if isinstance(v, dict):
                walk(key + ".", v)

    walk("", tomllib.loads(text))
    section = ""
    for line in text.splitlines():  # `# trust_store = ...` documents a key without a default
        if m := re.match(r"\s*\[([a-z_.]+)\]", line):
            section = m.group(1)
        elif m := re.match(r"\s*#\s*([a-z_]+)\s*=", line):
            keys.add(f"{section}.{m.group(1)}")
    return keys


def env_key(var: str) -> str:
    return ".".join(var.removeprefix("EWN__").lower().split("__"))


def check_env_keys(env: dict[str, str], where: str, known: set[str]) -> None:
    for var in env:
        if not var.startswith("EWN__"):
            continue
        key = env_key(var)
        if key in PENDING_KEYS:
            notes.append(f"{where}: {var} sets {key}, not in ewn.example.toml yet")
            continue
        check(key in known, where, f"{var}: {key} is not a key of deploy/config/ewn.example.toml")


SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|PRIVATE|BLINDING|SIGNING|CREDENTIAL", re.I)


def check_no_secret_env(env: dict[str, str], where: str) -> None:
    for var in env:
        check(not SECRET_NAME.search(var) or var.endswith("_FILE") or var.endswith("__FILE"),
              where, f"{var} looks like a secret in an environment variable: mount a file")


# ----------------------------------------------------------------------------- YAML files
def check_yaml_parses() -> None:
    for path in sorted(DEPLOY.rglob("*")):
        if path.suffix in (".yml", ".yaml") and path.is_file():
            global checks
            checks += 1
            load_yaml_docs(path)


# ----------------------------------------------------------------------------- alerts
def check_alerts() -> None:
    path = DEPLOY / "prometheus" / "alerts.yml"
    docs = load_yaml_docs(path)
    if not check(len(docs) == 1 and "groups" in docs[0], rel(path), "no `groups`"):
        return
    seen: set[str] = set()
    for group in docs[0]["groups"]:
        for rule in group.get("rules", []):
            name = rule.get("alert") or rule.get("record") or "?"
            where = f"{rel(path)} {name}"
            if "record" in rule:
                check_promql(rule["expr"], where)
                continue
            check(name not in seen, where, "duplicate alert name")
            seen.add(name)
            check(re.fullmatch(r"Ewn[A-Za-z0-9]+", name) is not None, where,
                  "alert names are EwnCamelCase")
            check("for" in rule, where, "no `for:`")
            sev = rule.get("labels", {}).get("severity")
            check(sev in ("critical", "warning"), where, f"severity {sev!r} (critical|warning)")
            ann = rule.get("annotations", {})
            for key in ("summary", "description"):
                check(bool(str(ann.get(key, "")).strip()), where, f"no {key} annotation")
            check_promql(rule.get("expr", ""), where)
            url = str(ann.get("runbook_url", ""))
            anchor = url.partition("#")[2]
            if check(url.startswith("https://") and "/deploy/README.md#" in url, where,
                     "runbook_url must point at a section of deploy/README.md"):
                check(anchor in readme_anchors(), where,
                      f"runbook_url anchor #{anchor} is not a heading of deploy/README.md")
    for required in (
        "EwnProcessorDown", "EwnConsumerLagHigh", "EwnUnauthenticatedIncidents",
        "EwnIncidentRejectionsHigh", "EwnVerifyFailuresHigh", "EwnLateEvents",
        "EwnPipelineStalled", "EwnEndToEndLatencyHigh", "EwnDeadLetters",
        "EwnAgencyDeliveriesFailing", "EwnAlertsEscalated",
    ):
        check(required in seen, rel(path), f"alert {required} is missing")

    test_path = DEPLOY / "prometheus" / "alerts_test.yml"
    for doc in load_yaml_docs(test_path):
        for test in doc.get("tests", []):
            for s in test.get("input_series", []):
                where = f"{rel(test_path)} {test.get('name', '')}"
                check_promql(s["series"], where)
                check_exported_shape(s["series"], where)

    am_path = DEPLOY / "prometheus" / "alertmanager.yml"
    for doc in load_yaml_docs(am_path):
        text = json.dumps(doc)
        for names in re.findall(r'alertname\s*=~?\s*\\"([^"\\]*)\\"', text):
            for name in names.split("|"):
                check(name in seen, rel(am_path), f"routes or inhibits {name}, which alerts.yml has not")


def check_exported_shape(series: str, where: str) -> None:
    """A rule test's input series carries every label the code exports on it, so the tests
    see series the way the services export them (`state` on rejections, say)."""
    m = re.fullmatch(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(.*)\})?\s*", series)
    if not m:
        return
    name, body = m.group(1), m.group(2) or ""
    labels = series_labels(name)
    if labels is None:
        return
    given = {lm.group(1) for lm in _MATCHER.finditer(body)}
    missing = labels - given
    check(not missing, where, f"input series {name} lacks the labels {sorted(missing)} the services export")


_ANCHORS: set[str] | None = None


def readme_anchors() -> set[str]:
    """GitHub's anchors of the headings of deploy/README.md."""
    global _ANCHORS
    if _ANCHORS is None:
        _ANCHORS = set()
        in_code = False
        for line in (DEPLOY / "README.md").read_text().splitlines():
            if line.startswith("```"):
                in_code = not in_code
            if not in_code and (h := re.match(r"#{1,6}\s+(.*)", line)):
                text = re.sub(r"[^\w\- ]", "", h.group(1).strip().lower())
                _ANCHORS.add(text.replace(" ", "-"))
    return _ANCHORS


# ----------------------------------------------------------------------------- dashboard
def dashboard_exprs(dash: dict) -> list[tuple[str, str]]:
    out = []
    for p in dash.get("panels", []):
        for t in p.get("targets", []):
            if "expr" in t:
                out.append((f"panel {p.get('id')} {p.get('title')!r} {t.get('refId')}", t["expr"]))
    return out


def grafana_to_promql(expr: str) -> str:
    return (expr.replace("$__rate_interval", "1m").replace("$__range", "1h")
            .replace("$__interval", "1m").replace("$instance", ".*"))


def check_dashboard() -> dict | None:
    path = DEPLOY / "grafana" / "ewn-dashboard.json"
    where = rel(path)
    try:
        dash = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        problem(where, f"does not parse as JSON: {e}")
        return None
    check(dash.get("uid") == "ewn-overview", where, "uid must be ewn-overview")
    check(dash.get("schemaVersion") == 39, where, "schemaVersion must be 39")
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource", {})
    check(ds.get("type") == "datasource" and ds.get("query") == "prometheus", where,
          "needs a `datasource` variable of type datasource, query prometheus")
    inst = variables.get("instance")
    if check(inst is not None and inst.get("type") == "query", where, "needs an `instance` query variable"):
        q = inst.get("definition") or inst.get("query", {}).get("query", "")
        if m := re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q):
            check_promql(m.group(1), f"{where} variable instance")
    rows = [p["title"] for p in dash.get("panels", []) if p.get("type") == "row"]
    check(rows == ["Ingest", "Correlation", "Delivery", "Kafka", "End-to-end",
                   "Correlation state and bounds", "Gateways (member states)", "Service health"], where,
          f"rows are {rows}")
    ids: set[int] = set()
    cells: dict[tuple[int, int], int] = {}
    for p in dash.get("panels", []):
        pw = f"{where} panel {p.get('id')} {p.get('title')!r}"
        check(p.get("id") not in ids, pw, "duplicate panel id")
        ids.add(p.get("id"))
        g = p.get("gridPos", {})
        check(g.get("x", 0) + g.get("w", 0) <= 24, pw, "wider than the grid")
        for x in range(g.get("x", 0), g.get("x", 0) + g.get("w", 0)):
            for y in range(g.get("y", 0), g.get("y", 0) + g.get("h", 0)):
                check((x, y) not in cells, pw, f"overlaps panel {cells.get((x, y))}")
                cells[(x, y)] = p.get("id")
        if p.get("type") == "row":
            continue
        check(p.get("type") in ("timeseries", "stat"), pw, f"type {p.get('type')}")
        check(p.get("datasource", {}).get("uid") == "${datasource}", pw,
              "datasource must be ${datasource}")
        check(bool(p.get("fieldConfig", {}).get("defaults", {}).get("unit")), pw, "no unit")
        for t in p.get("targets", []):
            check(t.get("datasource", {}).get("uid") == "${datasource}", pw,
                  f"target {t.get('refId')} datasource must be ${{datasource}}")
            check('instance=~"$instance"' in t.get("expr", ""), pw,
                  f"target {t.get('refId')} does not filter on $instance")
    used: set[str] = set()
    for pw, expr in dashboard_exprs(dash):
        check_promql(expr, f"{where} {pw}", used)
    for name in sorted(set(METRICS) - used - set(NOT_ON_DASHBOARD)):
        problem(where, f"no panel shows {name}")
    for name in sorted(set(NOT_ON_DASHBOARD) - set(METRICS)):
        problem("deploy/check.py", f"NOT_ON_DASHBOARD names {name}, which the services do not export")
    return dash


# ----------------------------------------------------------------------------- Prometheus
def check_prometheus_configs() -> None:
    for name in ("prometheus.yml", "prometheus-k8s.yml"):
        path = DEPLOY / "prometheus" / name
        docs = load_yaml_docs(path)
        if not docs:
            continue
        cfg = docs[0]
        check("alerts.yml" in cfg.get("rule_files", []), rel(path), "rule_files must list alerts.yml")
        jobs = {j["job_name"]: j for j in cfg.get("scrape_configs", [])}
        for job in PORTS:
            if check(job in jobs, rel(path), f"no scrape job {job}"):
                check(jobs[job].get("metrics_path", "/metrics") == "/metrics", rel(path),
                      f"{job}: metrics_path must be /metrics")
        if name == "prometheus.yml":
            for job, svc in (("ewn-process", "process"), ("ewn-fanout", "fanout")):
                sd = jobs.get(job, {}).get("dns_sd_configs", [{}])[0]
                check(sd.get("names") == [svc] and sd.get("port") == PORTS[job], rel(path),
                      f"{job}: must discover compose service {svc} on port {PORTS[job]}")
            for j in jobs.get("ewn-gateway", {}).get("file_sd_configs", []):
                for f in j.get("files", []):
                    check((path.parent / f).exists(), rel(path), f"file_sd file {f} missing")
        else:
            for job in ("ewn-process", "ewn-fanout", "ewn-gateway"):
                regexes = [r.get("regex") for r in jobs.get(job, {}).get("relabel_configs", [])
                           if r.get("source_labels") == ["__meta_kubernetes_pod_label_app_kubernetes_io_name"]]
                check(regexes == [job], rel(path), f"{job}: must keep pods labelled "
                      f"app.kubernetes.io/name={job}")


# ----------------------------------------------------------------------------- compose
def check_compose(known: set[str]) -> None:
    path = DEPLOY / "compose" / "docker-compose.yml"
    where = rel(path)
    docs = load_yaml_docs(path)
    if not docs:
        return
    services = docs[0].get("services", {})
    for svc in ("kafka", "topics", "process", "fanout", "prometheus", "grafana"):
        check(svc in services, where, f"no service {svc}")
    kafka = services.get("kafka", {})
    kenv = kafka.get("environment", {})
    check(kafka.get("image") == "apache/kafka:3.9.0", where, "kafka image must be apache/kafka:3.9.0")
    check("controller" in str(kenv.get("KAFKA_PROCESS_ROLES", "")), where, "kafka must run KRaft")
    check(str(kenv.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE")) == "false", where,
          "topic auto-creation must be off")
    check((path.parent / "Dockerfile").exists(), where, "deploy/compose/Dockerfile missing")
    expected = {"topics": ["topics", "create"], "process": ["process"], "fanout": ["fanout"]}
    for svc, cmd in expected.items():
        s = services.get(svc, {})
        sw = f"{where} {svc}"
        check(s.get("image") == "ewn:latest", sw, "image must be ewn:latest")
        check(s.get("command", [])[: len(cmd)] == cmd, sw, f"command must start with {cmd}")
        env = {k: str(v) for k, v in (s.get("environment") or {}).items()}
        check(env.get("EWN__KAFKA__BROKERS") == "kafka:9092", sw, "EWN__KAFKA__BROKERS=kafka:9092")
        check_env_keys(env, sw, known)
        for v in s.get("volumes", []):
            src, _, rest = str(v).partition(":")
            check(rest.endswith(":ro"), sw, f"volume {v} must be read-only")
            if not src.startswith("$"):
                check((path.parent / src).exists(), sw, f"volume source {src} does not exist")
        if svc in ("process", "fanout"):
            port, var = PORTS[f"ewn-{svc}"], ADMIN_LISTEN_VAR[f"ewn-{svc}"]
            check(env.get(var) == f"0.0.0.0:{port}", sw, f"{var} must be 0.0.0.0:{port}")
            hc = " ".join(s.get("healthcheck", {}).get("test", []))
            check(f"/{port}" in hc and "/healthz" in hc, sw, f"healthcheck must GET :{port}/healthz")
    check(services.get("fanout", {}).get("environment", {}).get("EWN__FANOUT__LISTEN")
          == f"0.0.0.0:{FANOUT_API_PORT}", where, f"fan-out API must listen on {FANOUT_API_PORT}")
    for svc, s in services.items():
        check_no_secret_env({k: str(v) for k, v in (s.get("environment") or {}).items()},
                            f"{where} {svc}")
        for v in s.get("volumes", []):
            src = str(v).split(":")[0]
            if src.startswith("."):
                check((path.parent / src).exists(), f"{where} {svc}", f"volume source {src} does not exist")


# ----------------------------------------------------------------------------- Kubernetes
def check_k8s(known: set[str]) -> None:
    k8s = DEPLOY / "k8s"
    kust = load_yaml_docs(k8s / "kustomization.yaml")
    resources = kust[0].get("resources", []) if kust else []
    files = sorted(p.name for p in k8s.glob("*.yaml") if p.name != "kustomization.yaml")
    check(sorted(resources) == files, rel(k8s / "kustomization.yaml"),
          f"resources {sorted(resources)} must list every manifest {files}")
    objs = []
    for name in files:
        for doc in load_yaml_docs(k8s / name):
            objs.append((name, doc))
    by_kind: dict[str, list[dict]] = {}
    for name, o in objs:
        where = f"{rel(k8s / name)} {o.get('kind')}/{o.get('metadata', {}).get('name')}"
        check(all(k in o for k in ("apiVersion", "kind", "metadata")), where, "not a k8s object")
        if o.get("kind") != "Namespace":
            check(o["metadata"].get("namespace") == "ewn", where, "namespace must be ewn")
        by_kind.setdefault(o.get("kind"), []).append(o)

    for cm in by_kind.get("ConfigMap", []):
        if "ewn.toml" in cm.get("data", {}):
            where = f"ConfigMap/{cm['metadata']['name']} ewn.toml"
            try:
                cfg = tomllib.loads(cm["data"]["ewn.toml"])
            except tomllib.TOMLDecodeError as e:
                problem(where, f"not valid TOML: {e}")
                continue

            def walk(prefix: str, table: dict) -> None:
                for k, v in table.items():
                    key = prefix + k
                    if isinstance(v, dict) and key != "kafka.properties":
                        walk(key + ".", v)
                    else:
                        check(key in known or key in PENDING_KEYS, where,
                              f"{key} is not a key of deploy/config/ewn.example.toml")

            walk("", cfg)

    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    check(set(deployments) == {"ewn-process", "ewn-fanout"}, "k8s", f"deployments {sorted(deployments)}")
    for name, d in deployments.items():
        where = f"Deployment/{name}"
        spec = d["spec"]
        pod = spec["template"]["spec"]
        labels = spec["template"]["metadata"].get("labels", {})
        check(spec.get("replicas") == 2, where, "replicas must be 2")
        check(labels.get("app.kubernetes.io/name") == name, where, "pod label app.kubernetes.io/name")
        psc = pod.get("securityContext", {})
        check(psc.get("runAsNonRoot") is True, where, "pod runAsNonRoot")
        check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where, "pod seccomp")
        check(pod.get("automountServiceAccountToken") is False, where, "no service account token")
        ann = spec["template"]["metadata"].get("annotations", {})
        port = PORTS[name]
        check(ann.get("prometheus.io/scrape") == "true", where, "prometheus.io/scrape")
        check(ann.get("prometheus.io/port") == str(port), where, f"prometheus.io/port {port}")
        check(ann.get("prometheus.io/path") == "/metrics", where, "prometheus.io/path")
        for c in pod.get("initContainers", []) + pod.get("containers", []):
            cw = f"{where} container {c['name']}"
            sc = c.get("securityContext", {})
            check(sc.get("readOnlyRootFilesystem") is True, cw, "readOnlyRootFilesystem")
            check(sc.get("allowPrivilegeEscalation") is False, cw, "allowPrivilegeEscalation false")
            check(sc.get("runAsNonRoot") is True, cw, "runAsNonRoot")
            check("ALL" in sc.get("capabilities", {}).get("drop", []), cw, "drop ALL capabilities")
            check(sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", cw, "seccomp")
            res = c.get("resources", {})
            check("requests" in res and "limits" in res, cw, "resource requests and limits")
            for e in c.get("env", []):
                check("secretKeyRef" not in str(e.get("valueFrom", "")), cw,
                      f"{e['name']}: secrets are mounted as files, never variables")
            check_env_keys({e["name"]: e.get("value", "") for e in c.get("env", [])}, cw, known)
            check_no_secret_env({e["name"]: "" for e in c.get("env", [])}, cw)
            check(not c.get("envFrom"), cw, "no envFrom")
        main = pod["containers"][0]
        ports = {p.get("name"): p["containerPort"] for p in main.get("ports", [])}
        check(ports.get("metrics") == port, where, f"container port `metrics` must be {port}")
        env = {e["name"]: e.get("value") for e in main.get("env", [])}
        var = ADMIN_LISTEN_VAR[name]
        check(env.get(var) == f"0.0.0.0:{port}", where, f"{var} must be 0.0.0.0:{port}")
        for probe in ("livenessProbe", "readinessProbe"):
            hg = main.get(probe, {}).get("httpGet", {})
            check(hg.get("path") == "/healthz" and hg.get("port") in ("metrics", port), where,
                  f"{probe} must GET /healthz on the metrics port")
        for v in pod.get("volumes", []):
            if "secret" in v:
                check(v["secret"].get("defaultMode") == 0o400, where,
                      f"secret volume {v['name']} must have defaultMode 0400")
        if name == "ewn-fanout":
            check(ports.get("http") == FANOUT_API_PORT, where, f"container port `http` {FANOUT_API_PORT}")
            check(env.get("EWN__FANOUT__LISTEN") == f"0.0.0.0:{FANOUT_API_PORT}", where,
                  "EWN__FANOUT__LISTEN")

    selectors = lambda kind: [o["spec"].get("selector", {}).get("matchLabels", {})  # noqa: E731
                              for o in by_kind.get(kind, [])]
    for name in deployments:
        check({"app.kubernetes.io/name": name} in selectors("PodDisruptionBudget"), "k8s",
              f"no PodDisruptionBudget for {name}")
        pols = [p for p in by_kind.get("NetworkPolicy", [])
                if p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") == name]
        if check(len(pols) == 1, "k8s", f"no NetworkPolicy for {name}"):
            egress = json.dumps(pols[0]["spec"].get("egress", []))
            check("9092" in egress, f"NetworkPolicy/{name}", "must allow egress to Kafka")
            if name == "ewn-fanout":
                check("0.0.0.0/0" in egress and "443" in egress, f"NetworkPolicy/{name}",
                      "must allow egress to webhook endpoints")
    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    api = services.get("ewn-fanout", {}).get("spec", {})
    check(any(p.get("port") == FANOUT_API_PORT for p in api.get("ports", [])), "Service/ewn-fanout",
          f"must expose the API on {FANOUT_API_PORT}")
    for name in deployments:
        check(any(s["spec"].get("selector") == {"app.kubernetes.io/name": name}
                  and any(p.get("port") == PORTS[name] for p in s["spec"].get("ports", []))
                  for s in services.values()), "k8s", f"no metrics Service for {name}")


# ----------------------------------------------------------------------------- tools
def run_tools(dash: dict | None) -> None:
    promtool = shutil.which("promtool")
    if not promtool:
        notes.append("promtool not found: PromQL syntax, config and rule unit tests not checked "
                     "(apt-get install prometheus, or a Prometheus release, provides it)")
    else:
        prom = DEPLOY / "prometheus"
        run([promtool, "check", "config", "prometheus.yml"], "promtool", cwd=prom)
        run([promtool, "check", "rules", "alerts.yml"], "promtool", cwd=prom)
        run([promtool, "test", "rules", "alerts_test.yml"], "promtool", cwd=prom)
        with tempfile.TemporaryDirectory() as tmp:
            # Builds without Kubernetes discovery (Debian's) cannot parse kubernetes_sd_configs:
            # check everything else with it replaced by a static target.
            cfg = load_yaml_docs(prom / "prometheus-k8s.yml")[0]
            for job in cfg.get("scrape_configs", []):
                if job.pop("kubernetes_sd_configs", None) is not None:
                    job["static_configs"] = [{"targets": ["pod.invalid:9101"]}]
            (Path(tmp) / "prometheus-k8s.yml").write_text(yaml.safe_dump(cfg))
            shutil.copy(prom / "alerts.yml", tmp)
            run([promtool, "check", "config", "prometheus-k8s.yml"], "promtool (k8s config)", cwd=Path(tmp))
            if dash is not None:
                rules = [{"record": f"ewn:dashboard:expr{i}", "expr": grafana_to_promql(e)}
                         for i, (_, e) in enumerate(dashboard_exprs(dash))]
                (Path(tmp) / "dash.yml").write_text(
                    yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
                if run([promtool, "check", "rules", "dash.yml"], "promtool (dashboard queries)",
                       cwd=Path(tmp)) is None:
                    for i, (where, e) in enumerate(dashboard_exprs(dash)):
                        notes.append(f"dashboard expr{i} = {where}")
    kubectl = shutil.which("kubectl")
    if not kubectl:
        notes.append("kubectl not found: kustomization not rendered")
        return
    rendered = run([kubectl, "kustomize", str(DEPLOY / "k8s")], "kubectl kustomize")
    if rendered is None:
        return
    validate = shutil.which("kubernetes-validate")
    if not validate:
        notes.append("kubernetes-validate not found: manifests not checked against the API "
                     "schemas (pip install kubernetes-validate)")
        return
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(rendered)
        f.flush()
        run([validate, "--strict", "--quiet", f.name], "kubernetes-validate")


def main() -> int:
    known = example_keys()
    check_yaml_parses()
    check_alerts()
    dash = check_dashboard()
    check_prometheus_configs()
    check_compose(known)
    check_k8s(known)
    run_tools(dash)
    for n in notes:
        print(f"note: {n}")
    unique = list(dict.fromkeys(problems))  # a file read by two checks reports once
    for p in unique:
        print(f"PROBLEM: {p}")
    print(f"deploy/check.py: {checks} checks, {len(unique)} problems")
    return 1 if unique else 0


if __name__ == "__main__":
    sys.exit(main())
