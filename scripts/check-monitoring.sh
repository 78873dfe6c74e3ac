#!/usr/bin/env bash
# Checks of the monitoring artefacts (no cluster, no running stack needed):
#   - promtool check rules / test rules on monitoring/alerts.yaml and its unit tests
#   - every rule: severity, summary, description, a runbook that exists; every rule fires in
#     some unit test and every alert is shown quiet in one
#   - amtool check-config on monitoring/alertmanager.yml, its routes by severity, and its
#     inhibitions on a throwaway Alertmanager
#   - monitoring/dashboard.json: valid JSON, datasource variable, job/instance variables,
#     no overlapping panels
#   - the PromQL syntax of every expression of the rules and the dashboard (promtool parses
#     each one as a recording rule), and of the PrometheusRules in the operator's snapshots
#   - docs/runbooks/: one page per alert with the standard sections, an index listing all,
#     and every log message they quote (`"message"`) still in the code
#   - monitoring/prometheus.yml (the local stack's scrape jobs): promtool check config
#   - with PROMETHEUS_URL set (e.g. the local stack's http://127.0.0.1:19090): the rules are
#     loaded there, every expression evaluates without error (/api/v1/query), and every
#     metric name the rules and the dashboard use has series there (absent ones are listed;
#     with REQUIRE_METRICS=1 each absent one fails unless METRICS_EXPECTED_ABSENT, one
#     "name reason" per line, explains it); every selector without series is listed too
# Every check of asynchronous state (a server started, alerts received and inhibited, rules
# loaded, series scraped) polls until it holds or PATIENCE_SECS (default 30) have passed, and
# says so when the deadline passes: a busy machine is slower, not wrong.
# Installs prometheus and prometheus-alertmanager (Debian) if promtool or amtool is missing.
#
# Usage: scripts/check-monitoring.sh
#        PROMETHEUS_URL=http://127.0.0.1:19090 scripts/check-monitoring.sh
#        loadtests/stack/check-monitoring-live.sh   (the local stack, with its expectations)
set -euo pipefail

PATIENCE_SECS=${PATIENCE_SECS:-30}
export PATIENCE_SECS

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PASSED=0
FAILED=0
WORK="$(mktemp -d)"
POLICY_CREATED=0
AM_PID=""
cleanup() {
  if [[ -n "$AM_PID" ]]; then kill "$AM_PID" 2>/dev/null || true; wait "$AM_PID" 2>/dev/null || true; fi
  if [[ "$POLICY_CREATED" == 1 ]]; then rm -f /usr/sbin/policy-rc.d; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

pass() { PASSED=$((PASSED + 1)); echo "ok    $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL  $*"; }
note() { echo "      $*"; }

# Runs a command as one check; its output is shown only when it fails.
check() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then
    pass "$name"
  else
    fail "$name"
    printf '%s\n' "$out" | sed 's/^/      /'
  fi
}

# Lines "ok<TAB>name" / "FAIL<TAB>name<TAB>detail" / "note<TAB>text" from the helper.
tally() {
  local status name detail
  while IFS=$'\t' read -r status name detail; do
    case $status in
      ok) pass "$name" ;;
      FAIL) fail "$name"; [[ -n "$detail" ]] && note "$detail" ;;
      note) note "$name" ;;
      *) echo "$status $name $detail" ;;
    esac
  done
}

# ---------------------------------------------------------------- tools
# The first python3 that has the yaml module (Debian's python3-yaml serves /usr/bin/python3,
# which a python3 earlier on PATH may not see).
PYTHON=python3
pick_python() {
  local candidate
  for candidate in python3 /usr/bin/python3; do
    if "$candidate" -c 'import yaml' 2>/dev/null; then PYTHON=$candidate; return 0; fi
  done
  return 1
}

install_tools() {
  local need=()
  command -v promtool >/dev/null || need+=(prometheus)
  command -v amtool >/dev/null || need+=(prometheus-alertmanager)
  command -v curl >/dev/null || need+=(curl)
  pick_python || need+=(python3 python3-yaml)
  if ((${#need[@]})); then
    [[ "$(id -u)" == 0 ]] || { echo "missing ${need[*]}; run as root to install them" >&2; exit 2; }
    echo "installing ${need[*]}"
    # The packages start Prometheus (:9090) and Alertmanager (:9093) on install; a
    # policy-rc.d that refuses keeps those ports for the local stack.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
      chmod 755 /usr/sbin/policy-rc.d
      POLICY_CREATED=1
    fi
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    if [[ "$POLICY_CREATED" == 1 ]]; then rm -f /usr/sbin/policy-rc.d; POLICY_CREATED=0; fi
  fi
  pick_python || { echo "no python3 with the yaml module" >&2; exit 2; }
  echo "promtool: $(promtool --version 2>&1 | head -n1)"
  echo "amtool: $(amtool --version 2>&1 | head -n1)"
}

# ---------------------------------------------------------------- helper
# Parsing and HTTP in one place; every subcommand prints tally lines or data.
cat >"$WORK/helper.py" <<'PY'
import glob, json, os, re, sys, time, urllib.parse, urllib.request
import yaml

RULES = "monitoring/alerts.yaml"
TESTS = "monitoring/alerts.test.yaml"
DASHBOARD = "monitoring/dashboard.json"
RUNBOOKS = "docs/runbooks"
SECTIONS = ["## Meaning", "## Impact", "## Confirm", "## Causes", "## Mitigate", "## Verify recovery"]
SEVERITIES = {"critical", "warning", "info"}

# How long a check of asynchronous state waits for it to hold (see the top of the script).
PATIENCE = float(os.environ.get("PATIENCE_SECS", "30"))

def poll(attempt, interval=0.2):
    """Calls attempt() until it returns (True, value) or PATIENCE seconds have passed;
    returns the last (held, value). An attempt that raises counts as not holding."""
    deadline = time.monotonic() + PATIENCE
    while True:
        try:
            held, value = attempt()
        except Exception as e:
            held, value = False, e
        if held or time.monotonic() >= deadline:
            return held, value
        time.sleep(interval)

def late(held):
    """What to add to a failure's detail when the deadline passed first."""
    return "" if held else f" (still so after {PATIENCE:.0f} s)"

def out(status, name, detail=""):
    flat = lambda text: " ".join(str(text).split())
    print(f"{status}\t{flat(name)}\t{flat(detail)}".rstrip("\t"))

def rules():
    for group in yaml.safe_load(open(RULES))["groups"]:
        for rule in group["rules"]:
            yield group["name"], rule

def alerts():
    return [r for _, r in rules() if "alert" in r]

# Grafana's variables, replaced by values Prometheus accepts.
def degrafana(expr):
    for var, value in (("$__rate_interval", "1m"), ("$__interval", "1m"), ("$__range", "1h")):
        expr = expr.replace(var, value)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)

def dashboard_exprs(dash):
    found = []
    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    found.append((f"dashboard panel {p.get('id')} \"{p.get('title')}\" {t.get('refId')}", t["expr"]))
            walk(p.get("panels", []))
    walk(dash.get("panels", []))
    for a in dash.get("annotations", {}).get("list", []):
        if a.get("expr"):
            found.append((f"dashboard annotation \"{a.get('name')}\"", a["expr"]))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", q)
        if m:
            found.append((f"dashboard variable ${v['name']}", m.group(1)))
        elif q.strip().startswith("query_result("):
            found.append((f"dashboard variable ${v['name']}", q.strip()[len("query_result("):-1]))
    return [(src, degrafana(e)) for src, e in found]

def all_exprs():
    def name(r):
        labels = ",".join(f"{k}={v}" for k, v in sorted(r.get("labels", {}).items()))
        return f"{r.get('alert') or r.get('record')}{{{labels}}}"
    exprs = [(f"rule {name(r)} (group {g})", r["expr"]) for g, r in rules()]
    exprs += dashboard_exprs(json.load(open(DASHBOARD)))
    return exprs

def cmd_exprs(target_dir):
    for i, (src, expr) in enumerate(all_exprs()):
        path = os.path.join(target_dir, f"expr-{i:03d}.yaml")
        doc = {"groups": [{"name": "syntax", "rules": [{"record": "check:expr", "expr": expr}]}]}
        with open(path, "w") as f:
            json.dump(doc, f)
        print(f"{path}\t{src}")

def cmd_lint():
    names = sorted({a["alert"] for a in alerts()})
    # Each rule: labels and annotations an on-call needs.
    for a in alerts():
        name, labels, ann = a["alert"], a.get("labels", {}), a.get("annotations", {})
        what = f"{name}{{{','.join(f'{k}={v}' for k, v in sorted(labels.items()))}}}"
        problems = []
        if labels.get("severity") not in SEVERITIES:
            problems.append(f"severity {labels.get('severity')!r} not in {sorted(SEVERITIES)}")
        for key in ("summary", "description", "runbook_url"):
            if not ann.get(key):
                problems.append(f"no {key}")
        url = ann.get("runbook_url", "")
        if not url.endswith(f"/docs/runbooks/{name}.md"):
            problems.append(f"runbook_url {url} does not end in /docs/runbooks/{name}.md")
        elif not os.path.isfile(os.path.join(RUNBOOKS, f"{name}.md")):
            problems.append(f"{RUNBOOKS}/{name}.md does not exist")
        if "$value" not in ann.get("description", ""):
            problems.append("description does not show $value")
        if problems:
            out("FAIL", f"rule {what} is complete", "; ".join(problems))
        else:
            out("ok", f"rule {what}: severity, summary, description, runbook")

    # Unit tests: every rule fires somewhere (its static labels in some exp_labels), with
    # severity and summary checked; every alert is shown quiet somewhere.
    tests = yaml.safe_load(open(TESTS))["tests"]
    fired, quiet = {}, set()
    for t in tests:
        for case in t.get("alert_rule_test", []):
            exp = case.get("exp_alerts") or []
            if not exp:
                quiet.add(case["alertname"])
            for e in exp:
                if "severity" in e.get("exp_labels", {}) and "summary" in e.get("exp_annotations", {}):
                    fired.setdefault(case["alertname"], []).append(e["exp_labels"])
    for a in alerts():
        name, labels = a["alert"], a.get("labels", {})
        what = f"{name}{{{','.join(f'{k}={v}' for k, v in sorted(labels.items()))}}}"
        if any(all(str(got.get(k)) == str(v) for k, v in labels.items()) for got in fired.get(name, [])):
            out("ok", f"unit test fires {what}")
        else:
            out("FAIL", f"unit test fires {what}", f"no test in {TESTS} expects it with severity and summary")
    for name in names:
        if name in quiet:
            out("ok", f"unit test keeps {name} quiet on healthy series")
        else:
            out("FAIL", f"unit test keeps {name} quiet on healthy series", f"no exp_alerts: [] case for it in {TESTS}")

    # Runbooks: one per alert, the standard sections, all listed in the index.
    pages = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(RUNBOOKS, "*.md"))} - {"README"}
    index = open(os.path.join(RUNBOOKS, "README.md")).read() if os.path.isfile(os.path.join(RUNBOOKS, "README.md")) else ""
    for name in names:
        path = os.path.join(RUNBOOKS, f"{name}.md")
        if not os.path.isfile(path):
            out("FAIL", f"runbook {name}", f"{path} missing")
            continue
        text = open(path).read()
        missing = [s for s in SECTIONS if not re.search(rf"^{re.escape(s)}\b", text, re.M)]
        problems = [f"no section {', '.join(missing)}"] if missing else []
        if not text.startswith(f"# {name}"):
            problems.append(f"does not start with '# {name}'")
        if f"({name}.md)" not in index:
            problems.append(f"not linked from {RUNBOOKS}/README.md")
        if problems:
            out("FAIL", f"runbook {name}", "; ".join(problems))
        else:
            out("ok", f"runbook {name}: sections, linked from the index")
    for orphan in sorted(pages - set(names)):
        out("FAIL", f"runbook {orphan}.md belongs to an alert", "no alert of that name in " + RULES)
    # Log lines quoted in runbooks (`"message"`) must still be what the code logs.
    sources = ""
    for path in glob.glob("app/src/**/*.rs", recursive=True) + glob.glob("operator/src/**/*.rs", recursive=True):
        sources += open(path).read()
    quoted = set()
    for page in glob.glob(os.path.join(RUNBOOKS, "*.md")):
        quoted |= {(os.path.basename(page), " ".join(m.split())) for m in re.findall(r'`"([^"`]+)"`', open(page).read())}
    stale = sorted(f"{page}: {msg}" for page, msg in quoted if f'"{msg}"' not in sources)
    if stale:
        out("FAIL", "log messages quoted in the runbooks exist in the code", "; ".join(stale))
    else:
        out("ok", f"log messages quoted in the runbooks exist in the code ({len({m for _, m in quoted})})")
    readme = open("monitoring/README.md").read() if os.path.isfile("monitoring/README.md") else ""
    missing = [n for n in names if n not in readme]
    if missing:
        out("FAIL", "monitoring/README.md maps every alert", "missing: " + ", ".join(missing))
    else:
        out("ok", "monitoring/README.md maps every alert")

def cmd_dashboard():
    try:
        dash = json.load(open(DASHBOARD))
    except Exception as e:
        out("FAIL", f"{DASHBOARD} is valid JSON", str(e))
        return
    out("ok", f"{DASHBOARD} is valid JSON")
    problems = []
    if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
        problems.append(f"schemaVersion {dash.get('schemaVersion')} (want >= 36)")
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource", {})
    if ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.append("no datasource variable of type datasource/prometheus")
    for name in ("job", "instance"):
        if variables.get(name, {}).get("type") != "query":
            problems.append(f"no query variable ${name}")
    out("FAIL" if problems else "ok", "dashboard variables: ${datasource}, $job, $instance", "; ".join(problems))

    panels, problems, ids, cells = [], [], set(), {}
    def walk(ps):
        for p in ps:
            panels.append(p)
            walk(p.get("panels", []))
    walk(dash.get("panels", []))
    for p in panels:
        label = f"panel {p.get('id')} \"{p.get('title')}\""
        if p.get("id") in ids:
            problems.append(f"{label}: duplicate id")
        ids.add(p.get("id"))
        g = p.get("gridPos", {})
        if g.get("x", 0) + g.get("w", 0) > 24:
            problems.append(f"{label}: wider than the grid")
        for dx in range(g.get("w", 0)):
            for dy in range(g.get("h", 0)):
                cell = (g["x"] + dx, g["y"] + dy)
                if cell in cells:
                    problems.append(f"{label} overlaps panel {cells[cell]}")
                    break
                cells[cell] = p.get("id")
            else:
                continue
            break
        if p.get("type") == "row":
            continue
        uses = [p.get("datasource", {}).get("uid")] + [t.get("datasource", {}).get("uid") for t in p.get("targets", [])]
        if any(u != "${datasource}" for u in uses):
            problems.append(f"{label}: datasource is not ${{datasource}}")
        if not p.get("targets"):
            problems.append(f"{label}: no query")
    out("FAIL" if problems else "ok", f"dashboard panels ({len(panels)}): unique ids, no overlap, ${{datasource}} everywhere", "; ".join(problems))

def cmd_snapshot_rules(target_dir):
    for snap in sorted(glob.glob("operator/tests/snapshots/*.snap")):
        body = open(snap).read().split("\n---\n", 1)[1]
        for doc in yaml.safe_load_all(body):
            if doc and doc.get("kind") == "PrometheusRule":
                path = os.path.join(target_dir, os.path.basename(snap) + ".rules.json")
                with open(path, "w") as f:
                    json.dump(doc["spec"], f)
                print(f"{path}\t{os.path.basename(snap)}")

def http_json(url, data=None):
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=30) as resp:
        body = resp.read()
    return json.loads(body) if body.strip() else None

def cmd_evaluate(base):
    base = base.rstrip("/")
    wanted = {a["alert"] for a in alerts()}
    def loaded_rules():
        loaded = http_json(f"{base}/api/v1/rules?type=alert")
        names = {r["name"] for g in loaded["data"]["groups"] for r in g["rules"]}
        missing = sorted(wanted - names)
        return not missing, missing
    held, missing = poll(loaded_rules)
    if isinstance(missing, Exception):
        out("FAIL", f"{base} answers /api/v1/rules", f"{missing}{late(held)}")
        return
    out("FAIL" if missing else "ok", f"{base} has the alerts of {RULES} loaded", "missing: " + ", ".join(missing) + late(held))
    holding, empty = [], []
    for src, expr in all_exprs():
        url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            body = http_json(url)
        except urllib.error.HTTPError as e:
            try:
                body = json.load(e)
            except Exception:
                body = {"status": "error", "error": str(e)}
        except Exception as e:
            body = {"status": "error", "error": str(e)}
        if body.get("status") == "success":
            out("ok", f"evaluates: {src}")
            has_data = bool(body["data"]["result"])
            if src.startswith("rule ") and has_data:
                holding.append(src)
            elif not src.startswith("rule ") and not has_data:
                empty.append(src)
        else:
            out("FAIL", f"evaluates: {src}", f"{body.get('errorType', '')} {body.get('error', '')}".strip())
    out("note", f"alert conditions true now on {base} (pending or firing): {len(holding)}")
    for src in holding:
        out("note", f"  {src}")
    out("note", f"dashboard queries without data on {base} (nothing to show yet, or a source this Prometheus does not scrape): {len(empty)}")
    for src in empty:
        out("note", f"  {src}")

PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
                "group_left", "group_right", "inf", "nan"}

def metric_names(expr):
    """Metric names an expression reads (selectors and bare names; not functions)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", "{}", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w:.])([a-zA-Z_:][\w:]*)", e):
        rest = e[m.end():].lstrip()
        if rest.startswith("(") or m.group(1).lower() in PROMQL_WORDS:
            continue
        names.add(m.group(1))
    return names

def selectors(expr):
    """Every `name{matchers}` of an expression (Grafana variables already replaced)."""
    return {m.group(0) for m in re.finditer(r'(?<![\w:.])[a-zA-Z_:][\w:]*\{(?:[^}"]|"(?:[^"\\]|\\.)*")*\}', expr)}

def cmd_metrics(base):
    base = base.rstrip("/")
    require = os.environ.get("REQUIRE_METRICS") == "1"
    expected = {}
    for line in os.environ.get("METRICS_EXPECTED_ABSENT", "").splitlines():
        if line.strip():
            name, _, why = line.strip().partition(" ")
            expected[name] = why.strip()
    users = {}
    sels = {}
    for src, expr in all_exprs():
        for name in metric_names(expr):
            users.setdefault(name, []).append(src)
        for sel in selectors(expr):
            sels.setdefault(sel, src)
    def series(query):
        body = http_json(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": query}))
        return body["data"]["result"]
    # Series appear as targets are scraped: with REQUIRE_METRICS=1, wait (PATIENCE) until
    # every name that must have series has some.
    def presence():
        found = {}
        for name in sorted(users):
            try:
                found[name] = series(f'count by (job) ({{__name__="{name}"}})')
            except Exception as e:
                found[name] = e
        waiting = [n for n, r in found.items() if not isinstance(r, list) or (not r and require and n not in expected)]
        return not waiting, found
    held, found = poll(presence) if require else (True, presence()[1])
    absent = []
    for name in sorted(users):
        result = found[name]
        if isinstance(result, Exception):
            out("FAIL", f"series of {name} on {base}", f"{result}{late(held)}")
            continue
        if result:
            jobs = ", ".join(sorted(f"{r['metric'].get('job', '-')} ({r['value'][1]})" for r in result))
            out("ok", f"series exist: {name} (job: {jobs})")
        elif name in expected:
            absent.append(name)
            out("note", f"no series: {name} (expected here: {expected[name]})")
        else:
            absent.append(name)
            where = "; ".join(sorted(set(users[name]))[:3])
            out("FAIL" if require else "note", f"no series: {name}", f"used by {where}{late(held)}")
    for name in sorted(set(expected) - set(users)):
        out("FAIL", f"METRICS_EXPECTED_ABSENT names {name}", "no rule or panel uses it")
    out("note", f"metric names used by the rules and the dashboard: {len(users)}, without series on {base}: {len(absent)}")
    empty = []
    for sel, src in sorted(sels.items()):
        if sel.split("{", 1)[0] in absent:
            continue
        try:
            if not series(f"count({sel})"):
                empty.append(f"{sel}  ({src})")
        except Exception as e:
            out("FAIL", f"selector {sel} on {base}", str(e))
    out("note", f"selectors of present metrics that match no series now (no such event yet): {len(empty)}")
    for e in empty:
        out("note", f"  {e}")

# Alerts posted to a throwaway Alertmanager; the expected inhibitions per scenario (each in
# its own namespace, so they do not inhibit one another).
INHIBITION = [
    ("whole service down", [
        ({"alertname": "ShortenerDown", "severity": "critical", "job": "shortener"}, False),
        ({"alertname": "ShortenerReplicaDown", "severity": "warning", "job": "shortener", "instance": "a"}, True),
        ({"alertname": "ShortenerHighLatencyP99", "severity": "warning", "job": "shortener", "route_class": "redirect"}, True),
    ]),
    ("one alert at two severities", [
        ({"alertname": "ShortenerHighErrorRatio", "severity": "critical", "job": "links", "route_class": "api"}, False),
        ({"alertname": "ShortenerHighErrorRatio", "severity": "warning", "job": "links", "route_class": "api"}, True),
        ({"alertname": "ShortenerHighErrorRatio", "severity": "warning", "job": "links", "route_class": "redirect"}, False),
    ]),
    ("database down", [
        ({"alertname": "PostgresDown", "severity": "critical", "job": "postgres", "signal": "exporter"}, False),
        ({"alertname": "ShortenerDatabaseUnavailable", "severity": "critical", "job": "links"}, True),
        ({"alertname": "ShortenerClickBacklog", "severity": "warning", "job": "links", "instance": "a"}, True),
        ({"alertname": "ShortenerClicksSpilled", "severity": "critical", "job": "links", "instance": "a"}, False),
        ({"alertname": "ShortenerClicksDropped", "severity": "critical", "job": "links", "instance": "a"}, False),
    ]),
    ("Redis down", [
        ({"alertname": "RedisDown", "severity": "warning", "job": "redis", "signal": "exporter"}, False),
        ({"alertname": "ShortenerRedisDown", "severity": "warning", "job": "links", "instance": "a"}, True),
        ({"alertname": "ShortenerCacheHitRatioLow", "severity": "warning", "job": "links"}, True),
        ({"alertname": "ShortenerRateLimitFallback", "severity": "warning", "job": "links", "instance": "a"}, True),
    ]),
    ("one replica cannot reach Redis", [
        ({"alertname": "ShortenerRedisDown", "severity": "warning", "job": "links", "instance": "a"}, False),
        ({"alertname": "ShortenerRateLimitFallback", "severity": "warning", "job": "links", "instance": "a"}, True),
        ({"alertname": "ShortenerRateLimitFallback", "severity": "warning", "job": "links", "instance": "b"}, False),
    ]),
]

# Posted after the scenarios, in a place of its own: a pair whose target the inhibitor mutes
# only once it has processed the pair's source, so (processing alerts in the order they were
# posted) every scenario's alert too. Its state is the barrier the scenarios are read after.
BARRIER = [
    ({"alertname": "ShortenerDown", "severity": "critical", "job": "shortener", "namespace": "barrier"}, False),
    ({"alertname": "ShortenerReplicaDown", "severity": "warning", "job": "shortener", "instance": "a", "namespace": "barrier"}, True),
]

def cmd_inhibition(base):
    base = base.rstrip("/")
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    def scenarios():
        for i, (scenario, alerts_) in enumerate(INHIBITION):
            # The first scenario runs without a namespace, like the local stack.
            yield scenario, [(dict(labels, **({"namespace": f"scenario-{i}"} if i else {})), inhibited)
                             for labels, inhibited in alerts_]
    def post(alerts_, summary):
        posted = [{"labels": labels, "annotations": {"summary": summary}, "startsAt": now} for labels, _ in alerts_]
        http_json(f"{base}/api/v2/alerts", json.dumps(posted).encode())
    for scenario, alerts_ in scenarios():
        post(alerts_, scenario)
    post(BARRIER, "barrier")
    def problems(got, alerts_):
        found = []
        for labels, inhibited in alerts_:
            status = got.get(tuple(sorted(labels.items())))
            desc = f"{labels['alertname']}{{{labels['severity']}}}"
            if status is None:
                found.append(f"{desc} not received")
            elif bool(status.get("inhibitedBy")) != inhibited:
                found.append(f"{desc} {'not ' if inhibited else ''}inhibited")
        return found
    # Inhibition is computed as the inhibitor catches up with the posted alerts: wait for the
    # barrier (and every alert to be received), then read the scenarios from that same state.
    def settled():
        got = {tuple(sorted(a["labels"].items())): a["status"] for a in http_json(f"{base}/api/v2/alerts")}
        waiting = problems(got, BARRIER) + [p for _, a in scenarios() for p in problems(got, a) if p.endswith("not received")]
        return not waiting, (got, waiting)
    held, state = poll(settled)
    if isinstance(state, Exception):
        out("FAIL", "alertmanager answers /api/v2/alerts", f"{state}{late(held)}")
        return
    got, waiting = state
    if not held:
        out("FAIL", "alertmanager processed every posted alert (the barrier pair)", "; ".join(waiting) + late(held))
    for scenario, alerts_ in scenarios():
        found = problems(got, alerts_)
        out("FAIL" if found else "ok", f"alertmanager inhibition: {scenario}", "; ".join(found) + (late(held) if found else ""))

if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"exprs": cmd_exprs, "lint": cmd_lint, "dashboard": cmd_dashboard,
     "snapshot-rules": cmd_snapshot_rules, "evaluate": cmd_evaluate, "metrics": cmd_metrics,
     "inhibition": cmd_inhibition}[cmd](*args)
PY
# A helper that crashes counts as a failed check instead of ending the run.
helper() { "$PYTHON" "$WORK/helper.py" "$@" || printf 'FAIL\thelper %s crashed (exit %s)\n' "$1" "$?"; }

# ---------------------------------------------------------------- rules
check_rules() {
  echo "== alerting rules"
  check "promtool check rules monitoring/alerts.yaml" promtool check rules monitoring/alerts.yaml
  check "promtool test rules monitoring/alerts.test.yaml" promtool test rules monitoring/alerts.test.yaml
  check "promtool check config monitoring/prometheus.yml (the local stack's jobs)" promtool check config monitoring/prometheus.yml
  tally < <(helper lint)
}

# ---------------------------------------------------------------- alertmanager
free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

check_alertmanager() {
  echo "== alertmanager"
  check "amtool check-config monitoring/alertmanager.yml" amtool check-config monitoring/alertmanager.yml
  local severity receiver
  for pair in critical:page warning:ticket info:log; do
    severity=${pair%%:*} receiver=${pair#*:}
    check "route severity=$severity -> $receiver" \
      amtool config routes test --config.file=monitoring/alertmanager.yml \
        --verify.receivers="$receiver" severity="$severity" alertname=Check
  done

  # Inhibitions on a private Alertmanager whose receivers point nowhere.
  local port am_bin
  am_bin=$(command -v prometheus-alertmanager || command -v alertmanager || true)
  if [[ -z "$am_bin" ]]; then
    fail "alertmanager inhibition (no alertmanager binary)"
    return
  fi
  port=$(free_port)
  sed 's#http://127.0.0.1:9099/alerts#http://127.0.0.1:9/alerts#' monitoring/alertmanager.yml >"$WORK/alertmanager.yml"
  "$am_bin" --config.file="$WORK/alertmanager.yml" --storage.path="$WORK/am-data" \
    --web.listen-address="127.0.0.1:$port" --cluster.listen-address= --log.level=warn \
    >"$WORK/alertmanager.log" 2>&1 &
  AM_PID=$!
  local ready=0 deadline=$((SECONDS + PATIENCE_SECS))
  while :; do
    if curl -fsS --max-time 5 "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1; then ready=1; break; fi
    kill -0 "$AM_PID" 2>/dev/null || break
    ((SECONDS < deadline)) || break
    sleep 0.2
  done
  if [[ "$ready" == 1 ]]; then
    tally < <(helper inhibition "http://127.0.0.1:$port")
  else
    fail "alertmanager started for the inhibition checks (not ready within $PATIENCE_SECS s, or exited)"
    sed 's/^/      /' "$WORK/alertmanager.log"
  fi
  kill "$AM_PID" 2>/dev/null || true
  wait "$AM_PID" 2>/dev/null || true
  AM_PID=""
}

# ---------------------------------------------------------------- dashboard and PromQL
check_promql() {
  echo "== dashboard"
  tally < <(helper dashboard)

  echo "== PromQL syntax (each expression as a recording rule)"
  mkdir -p "$WORK/exprs"
  local path src n=0 bad=0 out
  while IFS=$'\t' read -r path src; do
    n=$((n + 1))
    if ! out=$(promtool check rules --lint=none "$path" 2>&1); then
      bad=$((bad + 1))
      fail "parses: $src"
      printf '%s\n' "$out" | grep -v '^Checking' | sed 's/^/      /'
      note "$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["groups"][0]["rules"][0]["expr"])' "$path")"
    fi
  done < <(helper exprs "$WORK/exprs")
  if [[ "$bad" == 0 ]]; then pass "all $n expressions of the rules and the dashboard parse"; fi

  echo "== the operator's PrometheusRules (committed render snapshots)"
  local found=0
  while IFS=$'\t' read -r path src; do
    found=1
    check "promtool check rules: PrometheusRule in $src" promtool check rules "$path"
  done < <(helper snapshot-rules "$WORK")
  [[ "$found" == 1 ]] || fail "a PrometheusRule in operator/tests/snapshots/*.snap"
}

# ---------------------------------------------------------------- live Prometheus
check_live() {
  [[ -n "${PROMETHEUS_URL:-}" ]] || { echo "== (PROMETHEUS_URL not set: no evaluation against a live Prometheus)"; return 0; }
  echo "== evaluation on $PROMETHEUS_URL"
  tally < <(helper evaluate "$PROMETHEUS_URL")
  echo "== metrics and selectors present on $PROMETHEUS_URL"
  tally < <(helper metrics "$PROMETHEUS_URL")
}

install_tools
check_rules
check_alertmanager
check_promql
check_live

echo
echo "check-monitoring: $PASSED passed, $FAILED failed"
[[ "$FAILED" == 0 ]]
