#!/usr/bin/env python3
"""Writes the chaos suite's report (markdown) from its work directory: what
clients saw per phase, what was lost or doubled (answered 302s against click
rows, per link), and how long recovery took.

Usage: report.py WORK_DIR WALL_SECONDS PHASE...
"""
import collections
import os
import sys

work, wall, phases = sys.argv[1], sys.argv[2], sys.argv[3:]

marks = collections.defaultdict(dict)
with open(os.path.join(work, "marks")) as f:
    for line in f:
        parts = line.split()
        marks[parts[0]][parts[1]] = [float(x) for x in parts[2:]]

rows = collections.defaultdict(list)
with open(os.path.join(work, "responses")) as f:
    for line in f:
        parts = line.rstrip("\n").split(" ", 5)
        if len(parts) < 5:
            continue
        t, phase, code, status, ms = float(parts[0]), parts[1], parts[2], int(parts[3]), float(parts[4])
        location = parts[5] if len(parts) > 5 else ""
        rows[phase].append((t, code, status, ms, location))

database = {}
with open(os.path.join(work, "database")) as f:
    for line in f:
        code, target, events, counter = line.split()
        database[code] = (target, int(events), int(counter))


def pct(values, q):
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


print("| fault | requests | 302 | failed (no answer / 5xx / other) | idle connection closed, resent | p50 / p99 / max ms | answered 302s | click rows | lost | doubled | unanswered but recorded | last failure after fault | restore took |")
print("|---|---:|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
totals = collections.Counter()
problems = []
for phase in phases:
    rs = rows.get(phase, [])
    fault_at = marks[phase].get("fault", [0])[0]
    restored = marks[phase].get("restored", [None, None])
    answered = collections.Counter()
    failed = collections.Counter()
    last_failure = None
    for t, code, status, ms, location in rs:
        if status == -1:
            failed["closed idle"] += 1
            continue
        if status == 302:
            answered[code] += 1
            expected = database.get(code, ("?",))[0]
            if location != expected:
                problems.append(f"{phase}: {code} redirected to {location!r}, expected {expected!r}")
        else:
            kind = "no answer" if status == 0 else ("5xx" if status >= 500 else "other")
            failed[kind] += 1
            end = t + ms / 1000
            last_failure = end if last_failure is None else max(last_failure, end)
    lost = doubled = extra = events_total = 0
    phase_codes = set(code for _, code, _, _, _ in rs)
    for code in phase_codes:
        target, events, counter = database.get(code, ("?", 0, 0))
        if events != counter:
            problems.append(f"{phase}: {code} has {events} events but redirect_count {counter}")
        events_total += events
        a = answered[code]
        if events < a:
            lost += a - events
        elif events > a:
            extra += events - a
    closed_idle = failed.pop("closed idle", 0)
    failures_total = sum(failed.values())
    # More rows than answers is fine up to the requests that got no answer
    # (committed, then the response was lost, or the ingress retried it on
    # another replica); beyond that a click was counted twice.
    if extra > failures_total:
        doubled = extra - failures_total
        extra = failures_total
    lat = [ms for _, _, status, ms, _ in rs if status > 0]
    after = f"{last_failure - fault_at:.1f} s" if last_failure is not None else "none"
    took = f"{restored[1]:.1f} s" if restored[1] is not None else "–"
    failed_txt = " / ".join(str(failed[k]) for k in ("no answer", "5xx", "other"))
    print(f"| {phase} | {len(rs) - closed_idle} | {sum(answered.values())} | {failed_txt} | {closed_idle} | {pct(lat, .5):.0f} / {pct(lat, .99):.0f} / {max(lat, default=0):.0f} | "
          f"{sum(answered.values())} | {events_total} | **{lost}** | **{doubled}** | {extra} | {after} | {took} |")
    totals.update(closed_idle=closed_idle, requests=len(rs) - closed_idle, answered=sum(answered.values()), rows=events_total, lost=lost,
                  doubled=doubled, extra=extra, failed=failures_total)
print(f"| **all** | {totals['requests']} | {totals['answered']} | {totals['failed']} | {totals['closed_idle']} | | {totals['answered']} | {totals['rows']} | **{totals['lost']}** | **{totals['doubled']}** | {totals['extra']} | | |")
print()
print(f"Wall time under load: {wall} s.")
if problems:
    print()
    print("Problems:")
    for p in problems[:50]:
        print(f"- {p}")
else:
    print("Every 302 went to its link's target; every link's redirect_count equals its event rows.")
with open(os.path.join(work, "machine")) as f:
    print()
    print("Machine before the run: " + "; ".join(l.strip() for l in f if l.strip()))
