#!/usr/bin/env python3
"""Hostile-input measurements of `shortener serve`, binary against binary.

Each measurement starts the binary afresh (embedded SQLite in a new temporary
DATA_DIR, AUTH_MODE=api-key, a generated ADMIN_API_KEY, LISTEN_ADDR on a free
loopback port, the measurement's own environment), sends its requests, reads
what it needs, and stops the process. Python's standard library only.

    hostile.py --bin LABEL=PATH [--bin LABEL=PATH ...] [--report FILE]
               [--schemathesis SCRIPT] [--only N[,N...]]

The table (Markdown) goes to stdout and to --report. Called by run.sh.
"""

import argparse
import http.client
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time

ALNUM = string.ascii_letters + string.digits


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mib(kib):
    return kib / 1024.0


class Server:
    """One `shortener serve` process on a fresh data directory."""

    def __init__(self, binary, env, label):
        self.binary = binary
        self.label = label
        self.key = secrets.token_hex(24)
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="shortener-hostile-")
        base = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "LISTEN_ADDR": f"127.0.0.1:{self.port}",
            "DATA_DIR": os.path.join(self.dir, "data"),
            "AUTH_MODE": "api-key",
            "ADMIN_API_KEY": self.key,
            "LOG_FORMAT": "text",
            "ACCESS_LOG": "off",
            "SHUTDOWN_GRACE_SECS": "1",
        }
        base.update(env)
        self.env = base
        self.log_path = os.path.join(self.dir, "server.log")
        self.proc = None
        self.conns = {}

    def __enter__(self):
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [self.binary, "serve"], env=self.env, cwd=self.dir,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label}: exited at start:\n{self.log()}")
            try:
                status, _, _ = self.request("GET", "/health", fresh=True)
                if status:
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.label}: no answer within 30 s:\n{self.log()}")

    def __exit__(self, *exc):
        for conn in self.conns.values():
            conn.close()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def request(self, method, path, headers=None, body=None, source="127.0.0.1",
                fresh=False):
        """One request on a keep-alive connection from `source`; returns
        (status, headers, body bytes). Reconnects once if the connection
        was closed."""
        headers = dict(headers or {})
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        for attempt in (0, 1):
            conn = None if fresh else self.conns.get(source)
            if conn is None:
                conn = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=30, source_address=(source, 0))
                if not fresh:
                    self.conns[source] = conn
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                if fresh or resp.getheader("connection", "").lower() == "close":
                    conn.close()
                    self.conns.pop(source, None)
                return resp.status, resp, data
            except (http.client.HTTPException, ConnectionError, socket.timeout):
                conn.close()
                self.conns.pop(source, None)
                if attempt or fresh:
                    raise
        raise AssertionError("unreachable")

    def admin(self):
        return {"Authorization": f"Bearer {self.key}"}

    def memory(self):
        """(VmRSS, VmHWM) in KiB."""
        values = {}
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in ("VmRSS", "VmHWM"):
                    values[name] = int(rest.split()[0])
        return values["VmRSS"], values["VmHWM"]


def count(statuses):
    out = {}
    for s in statuses:
        out[s] = out.get(s, 0) + 1
    return " ".join(f"{n}×{s}" for s, n in sorted(out.items()))


# Each measurement: (id, title, env, function(server) -> cell text, what the
# fixed build should show). A function returns "n/a …" when the binary
# cannot do what it measures.

LIMITS = {"RATE_LIMIT_PER_MINUTE": "10", "RATE_LIMIT_BURST": "5"}


def m1_admin(srv):
    st = [srv.request("GET", "/urls", srv.admin())[0] for _ in range(40)]
    return f"{st.count(429)} of 40 answered 429 ({count(st)})"


def forged(i):
    ip = f"198.51.{(i // 250) % 250}.{i % 250 + 1}"
    return {"X-Forwarded-For": ip, "X-Real-IP": ip}


def m1_forged_admin(srv):
    st = [srv.request("GET", "/urls", {**srv.admin(), **forged(i)})[0]
          for i in range(40)]
    return f"{st.count(429)} of 40 answered 429 ({count(st)})"


def m1_forged_nokey(srv):
    st = [srv.request("GET", "/urls", forged(i))[0] for i in range(40)]
    return f"{st.count(429)} of 40 answered 429 ({count(st)})"


def m2_methods(srv):
    rng = random.Random(2)
    st = []
    for i in range(300):
        method = "X" + "".join(rng.choice(string.ascii_uppercase) for _ in range(7)) + str(i)
        st.append(srv.request(method, "/health")[0])
    status, _, body = srv.request("GET", "/metrics")
    if status != 200:
        return f"n/a (/metrics answered {status})"
    labels = set(re.findall(r'[{,]method="([^"]*)"', body.decode(errors="replace")))
    shown = ", ".join(sorted(labels)) if len(labels) <= 8 else "…"
    return f"{len(labels)} distinct `method` values ({shown}); requests: {count(st)}"


TARGETS = [
    ("credentials before the host", "https://good.example@evil.example/x"),
    ("backslash before @", "https://evil.example\\@good.example/"),
    ("U+202E right-to-left override", "https://good.example/\u202egpj.exe"),
    ("cloud metadata (link-local)", "http://169.254.169.254/latest/meta-data/"),
    ("loopback", "http://127.0.0.1:8080/admin"),
]


def m3_targets(srv):
    st = [srv.request("POST", "/urls", srv.admin(), {"original_url": url})[0]
          for _, url in TARGETS]
    # A plain target, to show the endpoint itself works on this binary.
    ok = srv.request("POST", "/urls", srv.admin(),
                     {"original_url": "https://example.com/plain"})[0]
    per = " ".join(str(s) for s in st)
    return f"{st.count(201)} of 5 accepted; {st.count(400)} × 400 ({per}; a plain target: {ok})"


def redirects(srv, paths):
    for _ in range(50):
        srv.request("GET", "/health")
    rss0, hwm0 = srv.memory()
    st = [srv.request("GET", p)[0] for p in paths]
    time.sleep(0.5)
    rss1, hwm1 = srv.memory()
    growth = (f"RSS {mib(rss0):.1f} → {mib(rss1):.1f} MiB (+{mib(rss1 - rss0):.1f}), "
              f"VmHWM {mib(hwm0):.1f} → {mib(hwm1):.1f} MiB (+{mib(hwm1 - hwm0):.1f})")
    return st, growth


def m4_long(srv):
    rng = random.Random(4)
    paths = ["/" + "".join(rng.choice(ALNUM) for _ in range(4096)) for _ in range(3000)]
    st, growth = redirects(srv, paths)
    return f"{growth}; {count(st)}"


def m4_codes(srv):
    rng = random.Random(7)
    paths = ["/" + "".join(rng.choice(ALNUM) for _ in range(7)) for _ in range(3000)]
    st, growth = redirects(srv, paths)
    return f"{growth}; {st.count(429)} × 429 ({count(st)})"


def guess():
    return "shk_" + "".join(secrets.choice(ALNUM) for _ in range(32))


def m6_guesses(srv):
    # A team key first, where the binary has them.
    status, _, body = srv.request(
        "POST", "/keys", srv.admin(), {"name": "team dashboard", "scope": "read-only"})
    team = json.loads(body).get("secret") if status == 201 else None
    st, team_st, admin_st = [], [], []
    for i in range(150):
        st.append(srv.request("GET", "/urls", {"Authorization": f"Bearer {guess()}"})[0])
        if i % 10 == 9:
            admin_st.append(srv.request("GET", "/urls", srv.admin())[0])
            if team:
                team_st.append(srv.request(
                    "GET", "/urls", {"Authorization": f"Bearer {team}"},
                    source="127.0.0.2")[0])
    first = st[:40]
    first429 = next((i + 1 for i, s in enumerate(st) if s == 429), None)
    guesses = (f"first 40: {count(first)}; all 150: {count(st)}; "
               f"first 429 at guess {first429 or '—'}")
    if team:
        teams = f"{team_st.count(200)} of {len(team_st)} answered 200 ({count(team_st)})"
    else:
        teams = f"n/a (no team keys: POST /keys answered {status})"
    admins = f"{admin_st.count(200)} of {len(admin_st)} answered 200 ({count(admin_st)})"
    return guesses, teams, admins


def m5_schemathesis(binary, script):
    if not script:
        return "not run"
    env = dict(os.environ, SHORTENER_BIN=binary)
    proc = subprocess.run(["bash", script], env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    refused = re.search(r"Validation Error: (.*)$", out, re.M)
    if not refused:
        return summarize(out)
    # The document does not pass the validator, so the script stops there:
    # schemathesis alone, with the script's flags (not its configuration,
    # which names operations an old document may not have).
    cell = f"the script stops: openapi-spec-validator refuses the document ({refused.group(1).strip()})"
    return cell + "; schemathesis alone, same flags: " + schemathesis_alone(binary, script)


def schemathesis_alone(binary, script):
    text = open(script).read()
    version = re.search(r"^SCHEMATHESIS_VERSION=(\S+)", text, re.M).group(1)
    validator = re.search(r"^VALIDATOR_VERSION=(\S+)", text, re.M).group(1)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    st = os.path.join(cache, "shortener", f"api-check-{version}-{validator}", "bin", "schemathesis")
    if not os.access(st, os.X_OK):
        return f"n/a ({st} missing: run scripts/schemathesis.sh once)"
    off = {"RATE_LIMIT_PER_MINUTE": "0", "CREATE_RATE_LIMIT_PER_MINUTE": "0",
           "REDIRECT_MISS_LIMIT_PER_MINUTE": "0"}
    with Server(binary, off, "schemathesis") as srv:
        proc = subprocess.run(
            [st, "run", f"http://127.0.0.1:{srv.port}/openapi.json",
             "--header", f"Authorization: Bearer {srv.key}",
             "--checks", "all", "--exclude-checks", "use_after_free",
             "--max-examples", "25", "--seed", "20261122",
             "--generation-database", "none", "--workers", "1", "--no-color"],
            cwd=srv.dir, capture_output=True, text=True, timeout=900)
    return summarize(proc.stdout + proc.stderr)


def summarize(out):
    """The summary of a scripts/schemathesis.sh run, on one line."""
    summary = []
    for pattern in (r"^\s*Selected: (\S+)", r"^\s*Tested: (\S+)"):
        m = re.search(pattern, out, re.M)
        if m:
            summary.append(m.group(0).strip())
    m = re.search(r"^Test cases:\s*\n\s*(.+)$", out, re.M)
    if m:
        summary.append("cases: " + m.group(1).strip())
    kinds = re.findall(r"^\s*❌ (ST\d+ [^:]+: \d+)$", out, re.M)
    if kinds:
        summary.append("failures: " + ", ".join(kinds))
    ends = [e for e in re.findall(r"^=+ (.+?) =+$", out, re.M) if e != "SUMMARY"]
    if ends:
        summary.append(ends[-1])
    last = [line for line in out.splitlines() if line.startswith("schemathesis")]
    if last:
        summary.append(last[-1])
    if not summary:
        tail = out.strip().splitlines()[-3:]
        return "no summary: " + " / ".join(tail)
    return "; ".join(summary)


MEASUREMENTS = [
    ("1", "40 × `GET /urls` with the admin key, one client; "
     "`RATE_LIMIT_PER_MINUTE=10 RATE_LIMIT_BURST=5 TRUST_PROXY_HEADERS=false`",
     {**LIMITS, "TRUST_PROXY_HEADERS": "false"}, m1_admin, "some 429 (after the burst of 5)"),
    ("1b", "the same with `X-Forwarded-For` and `X-Real-IP` forged, a new address per request, "
     "from an untrusted peer (`TRUST_PROXY_HEADERS` unset: the binary's default; `TRUSTED_PROXIES` unset)",
     LIMITS, m1_forged_admin, "limited as one client: some 429"),
    ("1c", "as 1b without a key (401s, limited per client address)",
     LIMITS, m1_forged_nokey, "limited as one client: some 429"),
    ("2", "300 requests with made-up methods to `/health`, then distinct `method` label values in `/metrics`",
     {}, m2_methods, "a handful (`_OTHER` for all made-up ones)"),
    ("3", "`POST /urls` of 5 hostile targets (" + "; ".join(n for n, _ in TARGETS) +
     "), `ALLOW_PRIVATE_TARGETS` unset", {}, m3_targets, "0 accepted, 5 × 400"),
    ("4", "3,000 redirects of random 4 KB paths: memory before and after",
     {}, m4_long, "no growth worth the name; 404 without lookups"),
    ("4b", "3,000 redirects of random 7-character codes `[A-Za-z0-9]` (looked up): memory, 429s "
     "(redirect-miss limit at its defaults, 60/min, burst 100)", {}, m4_codes,
     "429 after about 100 misses"),
    ("4c", "as 4b with `REDIRECT_MISS_LIMIT_PER_MINUTE=0` (every code looked up: the negative cache's share)",
     {"REDIRECT_MISS_LIMIT_PER_MINUTE": "0"}, m4_codes, "bounded growth"),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", action="append", required=True, help="LABEL=PATH")
    ap.add_argument("--report", default="target/hostile-report.md")
    ap.add_argument("--schemathesis", default="", help="path of scripts/schemathesis.sh")
    ap.add_argument("--only", default="", help="comma-separated measurement ids")
    args = ap.parse_args()
    bins = []
    for spec in args.bin:
        label, _, path = spec.partition("=")
        if not path or not os.access(path, os.X_OK):
            sys.exit(f"--bin {spec}: not an executable")
        bins.append((label, os.path.abspath(path)))
    only = set(filter(None, args.only.split(",")))

    rows = []  # (id, title, [cells], expected)
    for mid, title, env, fn, expected in MEASUREMENTS:
        if only and mid not in only and mid.rstrip("bc") not in only:
            continue
        cells = []
        for label, path in bins:
            print(f"== {mid} on {label}", file=sys.stderr, flush=True)
            try:
                with Server(path, env, label) as srv:
                    cells.append(fn(srv))
            except Exception as e:  # a measurement that cannot run is a cell
                cells.append(f"error: {e}".splitlines()[0][:200])
        rows.append((mid, title, cells, expected))

    if not only or "6" in only:
        g, t, a = [], [], []
        for label, path in bins:
            print(f"== 6 on {label}", file=sys.stderr, flush=True)
            try:
                with Server(path, {}, label) as srv:
                    guesses, teams, admins = m6_guesses(srv)
            except Exception as e:
                guesses = teams = admins = f"error: {e}".splitlines()[0][:200]
            g.append(guesses), t.append(teams), a.append(admins)
        rows.append(("6", "150 × `GET /urls` with random bearer keys (`shk_` + 32) from 127.0.0.1, "
                     "default limits (600/min, burst 100)", g, "401, then 429 once the burst is spent"))
        rows.append(("6b", "meanwhile every 10th guess: a `read-only` team key from 127.0.0.2", t,
                     "all 200"))
        rows.append(("6c", "meanwhile every 10th guess: the admin key from 127.0.0.1 (the guessing address)",
                     a, "all 200 (counted per key)"))

    if not only or "5" in only:
        cells = []
        for label, path in bins:
            print(f"== 5 on {label}", file=sys.stderr, flush=True)
            cells.append(m5_schemathesis(path, args.schemathesis))
        rows.append(("5", "`scripts/schemathesis.sh` against the binary and its own `/openapi.json`",
                     cells, "every operation tested, no failures"))

    order = {m[0]: i for i, m in enumerate(MEASUREMENTS)}
    order.update({"5": 90, "6": 91, "6b": 92, "6c": 93})
    rows.sort(key=lambda r: order.get(r[0], 99))

    esc = lambda s: s.replace("|", "\\|").replace("\n", " ")
    lines = ["| # | measurement | " + " | ".join(label for label, _ in bins) + " | the fix should show |",
             "|---|---|" + "---|" * len(bins) + "---|"]
    for mid, title, cells, expected in rows:
        lines.append(f"| {mid} | {esc(title)} | " + " | ".join(esc(c) for c in cells) +
                     f" | {esc(expected)} |")
    table = "\n".join(lines) + "\n"
    header = ("Binaries: " + "; ".join(f"{label} = `{path}`" for label, path in bins) + "\n\n")
    os.makedirs(os.path.dirname(os.path.abspath(args.report)), exist_ok=True)
    with open(args.report, "w") as f:
        f.write(header + table)
    print(table)


if __name__ == "__main__":
    main()
