#!/usr/bin/env python3
"""Webhook receiver for the local stack's Alertmanager.

Every notification Alertmanager POSTs (to any path; monitoring/alertmanager.yml uses
/alerts) is appended to a file as one JSON line: the payload as received, with
"received_at" (UTC, ISO 8601 with milliseconds) added in front. GET /health answers 200.

Usage: alert-sink.py --port 9099 --out $STACK_DIR/log/alerts.jsonl
Started and stopped by loadtests/stack/up.sh and down.sh; standard library only.
"""
import argparse
import datetime
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 4 * 1024 * 1024
LOCK = threading.Lock()


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Handler(BaseHTTPRequestHandler):
    out_path = ""

    def reply(self, code, text):
        body = (text + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path in ("/health", "/"):
            self.reply(200, "ok")
        else:
            self.reply(404, "not found")

    def do_POST(self):
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            self.reply(400, "bad Content-Length")
            return
        if length <= 0 or length > MAX_BODY:
            self.reply(400 if length <= 0 else 413, "empty or too large body")
            return
        raw = self.rfile.read(length)
        try:
            payload = json.loads(raw)
        except ValueError as e:
            self.log_message("rejected a body that is not JSON: %s", e)
            self.reply(400, "body is not JSON")
            return
        record = {"received_at": now(), "path": self.path}
        if isinstance(payload, dict):
            record.update(payload)
        else:
            record["payload"] = payload
        line = json.dumps(record, separators=(",", ":"), sort_keys=False)
        with LOCK:
            with open(self.out_path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        alerts = record.get("alerts") or []
        names = sorted({a.get("labels", {}).get("alertname", "?") for a in alerts if isinstance(a, dict)})
        self.log_message("%s %s: %d alert(s) %s", record.get("receiver"), record.get("status"), len(alerts), ",".join(names))
        self.reply(200, "ok")

    def log_message(self, fmt, *args):
        sys.stderr.write(f"{now()} {fmt % args}\n")
        sys.stderr.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9099)
    parser.add_argument("--out", required=True, help="file the notifications are appended to (JSON lines)")
    args = parser.parse_args()
    Handler.out_path = args.out
    # Fail at start, not at the first alert, if the file cannot be written.
    with open(args.out, "a", encoding="utf-8"):
        pass
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    sys.stderr.write(f"{now()} alert sink listening on {args.host}:{args.port}, writing {args.out}\n")
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
