#!/usr/bin/env python3
"""Steady redirect load for the chaos suite: THREADS keep-alive connections to
the entry point, each GETting short codes of the current phase in turn, at
most RATE requests per second in all, until the stop file appears.

Every response is one line of OUT: unix time (s), phase, code, status (0
when no answer came: refused, reset, timed out), latency (ms), Location.
A request on a reused keep-alive connection that the server had closed (as
nginx does to idle connections when it reloads its config, which up.sh does
on every restore) is sent again once on a new connection, as browsers do;
the closed attempt is logged with status -1.
The phase and its codes are read from DIR/phase (a name) and
DIR/codes-<phase> (one code per line), written by run.sh before it switches.
"""
import http.client
import os
import sys
import threading
import time

url_host, url_port, work, out_path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
threads = int(os.environ.get("CHAOS_THREADS", "6"))
rate = float(os.environ.get("CHAOS_RATE", "300"))
stop_file = os.path.join(work, "stop")

lock = threading.Lock()
out = open(out_path, "a", buffering=1)
state = {"phase": None, "codes": []}


def follow_phase():
    while not os.path.exists(stop_file):
        try:
            with open(os.path.join(work, "phase")) as f:
                phase = f.read().strip()
            if phase != state["phase"]:
                with open(os.path.join(work, f"codes-{phase}")) as f:
                    codes = [c.strip() for c in f if c.strip()]
                state["codes"], state["phase"] = codes, phase
        except OSError:
            pass
        time.sleep(0.05)


def worker(n):
    conn = None
    i = n
    interval = threads / rate
    next_at = time.monotonic()
    while not os.path.exists(stop_file):
        phase, codes = state["phase"], state["codes"]
        if not codes:
            time.sleep(0.05)
            continue
        code = codes[i % len(codes)]
        i += 1
        next_at = max(next_at + interval, time.monotonic() - 1)
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        for attempt in (1, 2):
            started = time.time()
            status, location = 0, ""
            reused = conn is not None
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(url_host, url_port, timeout=15)
                conn.request("GET", "/" + code)
                res = conn.getresponse()
                res.read()
                status, location = res.status, res.getheader("Location", "")
                if res.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                if conn is not None:
                    conn.close()
                conn = None
                if reused and attempt == 1:
                    status = -1
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
            took = (time.time() - started) * 1000
            with lock:
                out.write(f"{started:.3f} {phase} {code} {status} {took:.1f} {location}\n")
            if status != -1:
                break


threading.Thread(target=follow_phase, daemon=True).start()
workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
out.close()
