#!/usr/bin/env bash
# GET /urls/{id}/analytics at two sizes of the database: one replica on an embedded SQLite file
# where one link (the measured one) has CLICKS clicks spread over the last 30 days, and, in the
# big file only, OTHER_EVENTS more redirect events with their rollups over OTHER_LINKS other
# links. The measured link's rows are the same in both files, so equal timings mean the
# analytics read only the link's own rollups, whatever the size of the event table.
#
# Usage: loadtests/analytics/scale.sh
#
# Environment: CLICKS (100000), OTHER_EVENTS (10000000), OTHER_LINKS (10000), REQUESTS (200),
# ANALYTICS_PORT (18092), SHORTENER_BIN (target/release/shortener), SERVER_CPU, CLIENT_CPU.
# Prints, for each size: the file's size, then the median, p95 and max of REQUESTS timed
# requests of the 30-day daily view and of the 7-day hourly view.
set -euo pipefail
DURATION=${DURATION:-1s} # lib.sh wants one; no wrk run here
. "$(dirname "${BASH_SOURCE[0]}")/../wrk/lib.sh"

CLICKS=${CLICKS:-100000}
OTHER_EVENTS=${OTHER_EVENTS:-10000000}
OTHER_LINKS=${OTHER_LINKS:-10000}
REQUESTS=${REQUESTS:-200}
ANALYTICS_PORT=${ANALYTICS_PORT:-18092}
sqlite_tool_prerequisites "$ANALYTICS_PORT" ANALYTICS_PORT
scratch_dir analytics

# Rollup rows and events of `clicks` clicks of links [first, first + links), spread over the
# last 719 hours (a prime, so that every combination comes up in every hour) and over 4
# referrers x 3 browsers x 3 systems x 2 devices, as the click writer aggregates them (one
# row per link, hour and combination).
fill() { # db first links clicks
  local db=$1 first=$2 links=$3 clicks=$4
  sqlite3 "$db" >/dev/null "
  PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
  WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $clicks - 1)
  INSERT INTO events (url_id, event_type, timestamp, details)
  SELECT $first + i % $links, 'redirect',
         strftime('%Y-%m-%dT%H:%M:%S', 'now', '-' || (i % 719) || ' hours'),
         json_object('short_code', printf('a%08d', $first + i % $links)) FROM n;
  WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $clicks - 1)
  INSERT INTO click_rollups (url_id, hour, referrer, browser, os, device, shard, clicks)
  SELECT $first + i % $links,
         strftime('%Y-%m-%dT%H:00:00', 'now', '-' || (i % 719) || ' hours'),
         CASE i % 4 WHEN 0 THEN '' WHEN 1 THEN 'news.example.com' WHEN 2 THEN 'mail.example.com' ELSE 'social.example.com' END,
         CASE i % 3 WHEN 0 THEN 'Chrome' WHEN 1 THEN 'Firefox' ELSE 'Safari' END,
         CASE (i / 3) % 3 WHEN 0 THEN 'Windows' WHEN 1 THEN 'Android' ELSE 'iOS' END,
         CASE (i / 9) % 2 WHEN 0 THEN 'desktop' ELSE 'mobile' END,
         0, 1 FROM n
  WHERE true
  ON CONFLICT DO UPDATE SET clicks = clicks + 1;
  INSERT INTO redirect_counts (url_id, shard, redirect_count, last_redirect_at)
  SELECT url_id, 0, COUNT(*), MAX(timestamp) FROM events
  WHERE url_id BETWEEN $first AND $first + $links - 1 GROUP BY url_id;"
}

make_db() { # db with_others
  local db=$1
  env -i PATH="$PATH" DATABASE_URL="sqlite://$db" "$SHORTENER_BIN" migrate >/dev/null
  local links=1
  [ "$2" = yes ] && links=$((OTHER_LINKS + 1))
  sqlite3 "$db" "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $links)
    INSERT INTO urls (id, short_code, original_url, created_at, updated_at)
    SELECT i, printf('a%08d', i), 'https://example.com/' || i, datetime('now', '-31 days'),
           datetime('now', '-31 days') FROM n;"
  fill "$db" 1 1 "$CLICKS"
  [ "$2" = yes ] && fill "$db" 2 "$OTHER_LINKS" "$OTHER_EVENTS"
  return 0
}

percentiles() { # file of seconds, one a line
  sort -n "$1" | awk '{ v[NR] = $1 } END {
    printf "median %.2f ms  p95 %.2f ms  max %.2f ms", v[int(NR / 2) + 1] * 1000, v[int(NR * 0.95)] * 1000, v[NR] * 1000 }'
}

for size in small big; do
  db="$work/$size.db"
  others=no
  [ "$size" = big ] && others=yes
  log "$size: writing the database (link 1: $CLICKS clicks; others: $( [ $others = yes ] && echo "$OTHER_EVENTS events over $OTHER_LINKS links" || echo none))"
  make_db "$db" "$others"
  taskset -c "$SERVER_CPU" env -i PATH="$PATH" DATABASE_URL="sqlite://$db" \
    LISTEN_ADDR="127.0.0.1:$ANALYTICS_PORT" AUTH_MODE=open DATA_DIR="$work" ACCESS_LOG=off RATE_LIMIT_PER_MINUTE=0 \
    "$SHORTENER_BIN" serve </dev/null >"$work/serve.log" 2>&1 &
  pid=$!
  wait_http_ok "http://127.0.0.1:$ANALYTICS_PORT/health" 120 || { tail -n 20 "$work/serve.log" >&2; die "the replica did not start"; }
  from=$(date -u -d '-30 days' +%Y-%m-%dT%H:00:00Z)
  week=$(date -u -d '-7 days' +%Y-%m-%dT%H:00:00Z)
  events=$(sqlite3 "$db" "SELECT COUNT(*) FROM events")
  rollups=$(sqlite3 "$db" "SELECT COUNT(*) FROM click_rollups")
  printf '%-5s file %s, %s events, %s rollup rows\n' "$size" "$(du -h "$db" | cut -f1)" "$events" "$rollups"
  for view in "daily-30d:/urls/1/analytics?from=$from&granularity=day" "hourly-7d:/urls/1/analytics?from=$week&granularity=hour"; do
    name=${view%%:*}
    path=${view#*:}
    total=$(curl -fsS "http://127.0.0.1:$ANALYTICS_PORT$path" | grep -o '"clicks":[0-9]*' | head -1 | cut -d: -f2)
    : >"$work/times"
    for _ in $(seq "$REQUESTS"); do
      taskset -c "$CLIENT_CPU" curl -fsS -o /dev/null -w '%{time_total}\n' \
        "http://127.0.0.1:$ANALYTICS_PORT$path" >>"$work/times"
    done
    printf '      %-10s (clicks %s)  %s\n' "$name" "${total:-?}" "$(percentiles "$work/times")"
  done
  stop_server
done
