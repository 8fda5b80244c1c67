#!/usr/bin/env bash
# Runs every example of README.md, in README order, against a running server, and checks that each
# answer has the HTTP status, shape and values the README shows.
#
#   MCPLOG_URL=http://127.0.0.1:8080 MCPLOG_DATA=/path/to/data MCPLOG_SERVER_PID=<its pid> bash tests/readme/examples.sh
#
# The master secret rotation walk-through restarts the server: the script stops the one at
# MCPLOG_SERVER_PID with SIGTERM and runs its own (`cargo run --release -- serve`) on the same
# address and data directory, with the environment the README gives it; at the end it stops that
# one with SIGTERM and checks that it exits 0.
#
# Needs bash, curl, flock (util-linux) and python3. The server must be freshly started on
# MCPLOG_DATA (an empty log) and run with MCPLOG_REPLAY_HEARTBEAT shorter than
# MCPLOG_FOLLOW_SECONDS (default 3), so the follow example sees a heartbeat. `cargo test --test it readme` does all that (tests/it/readme.rs), and also checks
# that every example command of the README appears below, verbatim and in order.
#
# The README's commands are copied here unchanged. Two shell functions make them run here:
# `curl` sends `localhost:8080` to MCPLOG_URL instead and records the status and body; `cargo run`
# runs MCPLOG_BIN (mcplog) or MCPLOG_SEG_BIN (mcplog-seg) instead of building (`serve` in the
# background, see above). After each command,
# `expect` checks the answer (with python3; jq is not needed).
set -euo pipefail

: "${MCPLOG_URL:?the server's base URL, such as http://127.0.0.1:8080}"
: "${MCPLOG_DATA:?the server's data directory}"
MCPLOG_BIN=${MCPLOG_BIN:-mcplog}
MCPLOG_SEG_BIN=${MCPLOG_SEG_BIN:-mcplog-seg}
MCPLOG_FOLLOW_SECONDS=${MCPLOG_FOLLOW_SECONDS:-3}
MCPLOG_DATA=$(cd "$MCPLOG_DATA" && pwd)
# The script changes directory: a binary given by a relative path is made absolute.
[[ $MCPLOG_BIN == */* && $MCPLOG_BIN != /* ]] && MCPLOG_BIN=$PWD/$MCPLOG_BIN
[[ $MCPLOG_SEG_BIN == */* && $MCPLOG_SEG_BIN != /* ]] && MCPLOG_SEG_BIN=$PWD/$MCPLOG_SEG_BIN
# keygen must find the server's master secret the README's way: in ./data.
unset MCPLOG_DATA_DIR MCPLOG_MASTER_SECRET MCPLOG_KEY_LIFETIME_MAX

# A scratch directory in which ./data is the server's data directory, as in the README.
work=$(mktemp -d)
server_pid=""
trap '[[ -n $server_pid ]] && kill -TERM "$server_pid" 2>/dev/null; rm -rf "$work"' EXIT
ln -s "$MCPLOG_DATA" "$work/data"
cd "$work"

step() { printf '\n=== %s\n' "$*" >&2; }
fail() {
  printf 'FAIL: %s\n' "$*" >&2
  [[ -f $work/server.log ]] && printf -- '--- the restarted server log\n%s\n' "$(tail -n 40 "$work/server.log")" >&2
  exit 1
}

# Stops the running server with SIGTERM (the test's, then the script's own) and waits until the
# data directory's lock is free.
stop_server() {
  local rc=0
  if [[ -n $server_pid ]]; then
    kill -TERM "$server_pid"
    wait "$server_pid" || rc=$?
    server_pid=""
    [[ $rc == 0 ]] || fail "the server exited $rc after SIGTERM"
  else
    : "${MCPLOG_SERVER_PID:?the pid of the server the script was started against}"
    kill -TERM "$MCPLOG_SERVER_PID"
  fi
  for _ in $(seq 300); do
    flock -n "$MCPLOG_DATA/LOCK" true && return
    sleep 0.1
  done
  fail "the server did not stop"
}

# `cargo run --release -- serve ARGS`: a server in the background on MCPLOG_URL's address and
# MCPLOG_DATA, with the caller's environment; returns once it answers /readyz.
start_server() {
  "$MCPLOG_BIN" serve "$@" --data-dir "$MCPLOG_DATA" --bind "${MCPLOG_URL#http://}" >>"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 300); do
    command curl -sf -o /dev/null "$MCPLOG_URL/readyz" && return
    kill -0 "$server_pid" 2>/dev/null || fail "the server exited at start"
    sleep 0.1
  done
  fail "the server did not start"
}

# curl as the README writes it, sent to MCPLOG_URL. The body goes to $work/body (and its first
# 2000 bytes to stdout, for the log), the HTTP status to $work/status. A follow stream is ended after
# MCPLOG_FOLLOW_SECONDS (curl's exit 28 is then expected).
curl() {
  local args=() arg extra=() rc=0
  for arg in "$@"; do args+=("${arg//localhost:8080/$MCPLOG_URL}"); done
  case " $* " in *follow=true*) extra=(--max-time "$MCPLOG_FOLLOW_SECONDS") ;; esac
  command curl "${extra[@]}" -o "$work/body" -w '%{http_code}' "${args[@]}" >"$work/status" || rc=$?
  head -c 2000 "$work/body"
  echo
  if [[ $rc != 0 && ! ($rc == 28 && ${#extra[@]} -gt 0) ]]; then
    fail "curl exited $rc"
  fi
}

# cargo run as the README writes it: `cargo run --release -- ARGS` runs mcplog, and
# `cargo run --release --bin mcplog-seg -- ARGS` runs mcplog-seg. The tool's stdout and stderr are
# passed on and also kept in $work/out and $work/stderr for check_tool.
cargo() {
  local rc=0 tool
  if [[ $# -ge 4 && "$1 $2 $3 $4" == "run --release -- serve" ]]; then
    shift 4
    start_server "$@"
    return
  elif [[ $# -ge 3 && "$1 $2 $3" == "run --release --" ]]; then
    tool=$MCPLOG_BIN
    shift 3
  elif [[ $# -ge 5 && "$1 $2 $3 $4 $5" == "run --release --bin mcplog-seg --" ]]; then
    tool=$MCPLOG_SEG_BIN
    shift 5
  else
    fail "cargo $* is not a form this script knows"
  fi
  "$tool" "$@" >"$work/out" 2>"$work/stderr" || rc=$?
  cat "$work/out"
  cat "$work/stderr" >&2
  [[ $rc == 0 ]] || fail "$tool $* exited $rc"
}

# expect STATUS PYTHON: the last curl answered HTTP STATUS, and the PYTHON statements hold. They
# see `raw` (the body), `b` (it parsed as JSON, or None), `values` (the body parsed as a sequence of
# JSON values, for NDJSON), `T` (the README's T), `now`, `near(a, b, rel)` and `order(obj, keys)`
# (obj's keys are exactly these, in this order).
expect() {
  local want=$1 code=$2 got
  got=$(<"$work/status")
  [[ $got == "$want" ]] || fail "HTTP $got where the README shows $want; body: $(<"$work/body")"
  T=${T:-0} python3 - "$work/body" "$code" <<'PY' || fail "the answer differs from the README: $(head -c 2000 "$work/body")"
import json, os, sys, time

raw = open(sys.argv[1], encoding="utf-8").read()
try:
    b = json.loads(raw)
except ValueError:
    b = None

def parse_values(text):
    decoder, out, i = json.JSONDecoder(), [], 0
    while True:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        if i == len(text):
            return out
        value, i = decoder.raw_decode(text, i)
        out.append(value)

def near(a, b, rel=1e-9):
    return a is not None and abs(a - b) <= rel * abs(b) + 1e-9

def order(obj, keys):
    assert list(obj) == list(keys), f"keys {list(obj)}, README shows {list(keys)}"
    return True

try:
    values = parse_values(raw)
except ValueError:
    values = None
env = dict(raw=raw, b=b, values=values, T=int(os.environ["T"]), now=time.time(), near=near, order=order)
exec(sys.argv[2], env)
PY
}

# check_tool PYTHON: the PYTHON statements hold over the last cargo command's stdout (`out`) and
# stderr (`err`).
check_tool() {
  local code=$1
  python3 - "$work/out" "$work/stderr" "$code" <<'PY' || fail "the tool's output differs from the README: $(head -c 2000 "$work/out") $(head -c 500 "$work/stderr")"
import json, re, sys
out = open(sys.argv[1], encoding="utf-8").read()
err = open(sys.argv[2], encoding="utf-8").read()
exec(sys.argv[3], dict(out=out, err=err, json=json, re=re))
PY
}

step "First call"
KEY=$(cat data/admin.key)
[[ $KEY == mcplog_admin_* ]] || fail "data/admin.key does not hold an admin key"

step "Keys and roles: keygen"
WRITER=$(cargo run --release -- keygen --mcp-id ocr_workflow_mcp_001 --role writer --expires-in 24h)
check_tool '
m = re.fullmatch(r"key_id ([0-9a-f]{16}), role writer, expires_at (\d+) \(Unix seconds\)\n", err)
assert m, err
k = re.fullmatch(r"mcplog1\.writer\.(\d+)\.6f63725f776f726b666c6f775f6d63705f303031\.[0-9a-f]{16}\.[0-9a-f]{32}\n", out)
assert k, out
assert k.group(1) == m.group(2)
'
WRITER_ID=$(sed -E 's/^key_id ([0-9a-f]{16}),.*/\1/' "$work/stderr")
echo "$WRITER"
cargo run --release -- keygen --role auditor --expires-in 7d --json
check_tool '
import time
j = json.loads(out)
assert list(j) == ["expires_at", "key", "key_id", "mcp_id", "role"], j
assert j["role"] == "auditor" and j["mcp_id"] is None and re.fullmatch(r"[0-9a-f]{16}", j["key_id"])
assert re.fullmatch(r"mcplog1\.auditor\.%d\.\.[0-9a-f]{16}\.[0-9a-f]{32}" % j["expires_at"], j["key"])
assert abs(j["expires_at"] - time.time() - 7 * 86400) < 60
assert err == "", err
'

step "Keys and roles: revocation"
curl -s localhost:8080/api/v2/keys/revoke -H "Authorization: Bearer $KEY" -d '{"key":"'"$WRITER"'"}'
expect 200 "order(b, ['status', 'key_id']); assert b == {'status': 'revoked', 'key_id': '$WRITER_ID'}"
curl -s localhost:8080/api/v2/interactions/stats -H "Authorization: Bearer $WRITER"
expect 401 "assert b == {'error': {'code': 'unauthorized', 'message': 'the API key has been revoked', 'field': 'authorization'}}, b"

step "Keys and roles: rotating the master secret"
OLD_AUDITOR=$(cargo run --release -- keygen --role auditor --expires-in 1h)   # signed with the secret in use
OLD_SECRET=$(<data/master.secret)
stop_server
mv data/master.secret data/master.secret.old
MCPLOG_PREVIOUS_MASTER_SECRETS=$(cat data/master.secret.old) cargo run --release -- serve
[[ -f data/master.secret && $(<data/master.secret) != "$OLD_SECRET" ]] || fail "no new master.secret"
curl -s localhost:8080/api/v2/interactions/stats -H "Authorization: Bearer $OLD_AUDITOR"   # 200, and counted:
expect 200 "assert b['records']['total'] == 0, b"
curl -s localhost:8080/metrics | grep mcplog_keys_previous_secret_total
expect 200 "import re; assert re.search(r'^mcplog_keys_previous_secret_total 1$', raw, re.M), raw[:3000]"
AUDITOR=$(cargo run --release -- keygen --role auditor --expires-in 7d)
check_tool 'assert re.fullmatch(r"mcplog1\.auditor\.\d+\.\.[0-9a-f]{16}\.[0-9a-f]{32}\n", out), out'
stop_server
rm data/master.secret.old
cargo run --release -- serve
curl -s localhost:8080/api/v2/interactions/stats -H "Authorization: Bearer $OLD_AUDITOR"
expect 401 "assert b == {'error': {'code': 'unauthorized', 'message': 'a valid API key is required: Authorization: Bearer <key>', 'field': 'authorization'}}, b"
# The new key, signed with the new secret, works without the old one.
curl -s localhost:8080/api/v2/interactions/stats -H "Authorization: Bearer $AUDITOR"
expect 200 "assert b['records']['total'] == 0, b"

step "POST /api/v2/interactions"
T=$(date +%s)     # now; the example interaction ran over the last three seconds
curl -s localhost:8080/api/v2/interactions -H "Authorization: Bearer $KEY" -d '{
  "action": "interaction_start", "interaction_id": "abc-123", "mcp_id": "ocr_workflow_mcp_001",
  "timestamp": '$((T-3)).25', "request_data": {"file": "a.pdf"}}'
expect 200 "order(b, ['status', 'interaction_id', 'seq', 'queue_position'])
assert b == {'status': 'accepted', 'interaction_id': 'abc-123', 'seq': 2, 'queue_position': 1}, b"

step "POST /api/v2/interactions/batch"
curl -s localhost:8080/api/v2/interactions/batch -H "Authorization: Bearer $KEY" -d '[
  {"action":"interaction_progress","interaction_id":"abc-123","mcp_id":"ocr_workflow_mcp_001","timestamp":'$((T-2))',"progress_data":{"page":1}},
  {"action":"interaction_complete","interaction_id":"abc-123","mcp_id":"ocr_workflow_mcp_001","timestamp":'$((T-1)).75',"result_data":{"pages":3}}]'
expect 200 "order(b, ['status', 'count', 'seqs', 'duplicates', 'queue_position'])
assert b == {'status': 'accepted', 'count': 2, 'seqs': [3, 4], 'duplicates': 0, 'queue_position': 2}, b"

curl -s "localhost:8080/api/v2/interactions/batch?partial=true" -H "Authorization: Bearer $KEY" -d '[
  {"action":"interaction_start","interaction_id":"stats","mcp_id":"ocr_workflow_mcp_001","timestamp":'$T'},
  {"action":"interaction_start","interaction_id":"x-1","mcp_id":"ocr_workflow_mcp_001","timestamp":'$T'000}]'
expect 207 "order(b, ['status', 'count', 'stored', 'duplicates', 'failed', 'queue_position', 'results'])
assert [b[k] for k in ['status', 'count', 'stored', 'duplicates', 'failed', 'queue_position']] == ['partial', 2, 0, 0, 2, 0], b
r = b['results']
assert [(x['index'], x['status'], x['http_status'], x['error']['code'], x['error']['field']) for x in r] == [
    (0, 'error', 422, 'reserved_id', 'interaction_id'), (1, 'error', 422, 'looks_like_milliseconds', 'timestamp')], r"

# The record as the README shows it; history repeats it.
RECORD_CHECK='
def check_record(r):
    order(r, ["interaction_id", "mcp_id", "status", "start_time", "end_time", "processing_time",
              "request_data", "result_data", "error_data", "cancel_data", "progress_updates", "metadata"])
    assert (r["interaction_id"], r["mcp_id"], r["status"]) == ("abc-123", "ocr_workflow_mcp_001", "completed"), r
    assert r["start_time"] == T - 3 + 0.25 and r["end_time"] == T - 1 + 0.75 and r["processing_time"] == 2.5, r
    assert (r["request_data"], r["result_data"], r["error_data"], r["cancel_data"]) == ({"file": "a.pdf"}, {"pages": 3}, {}, {}), r
    assert r["progress_updates"] == [{"timestamp": float(T - 2), "data": {"page": 1}}], r
    m = r["metadata"]
    order(m, ["received_at", "key_id", "first_seq", "last_seq", "event_count", "conflicts"])
    assert abs(m["received_at"] - now) < 60 and len(m["key_id"]) == 16, m
    assert (m["first_seq"], m["last_seq"], m["event_count"], m["conflicts"]) == (2, 4, 3, 0), m
'

step "GET /api/v2/interactions/{id}"
curl -s localhost:8080/api/v2/interactions/abc-123 -H "Authorization: Bearer $KEY"
expect 200 "$RECORD_CHECK
check_record(b)
assert '\"request_data\":{\"file\": \"a.pdf\"}' in raw, 'the payload is not the client bytes'"

curl -s "localhost:8080/api/v2/interactions/abc-123?mcp_id=ocr_workflow_mcp_001" -H "Authorization: Bearer $KEY"
expect 200 "$RECORD_CHECK
check_record(b)"

step "GET /api/v2/interactions/{id}/events"
curl -s localhost:8080/api/v2/interactions/abc-123/events -H "Authorization: Bearer $KEY"
expect 200 "order(b, ['interaction_id', 'events']); assert b['interaction_id'] == 'abc-123'
assert [e['seq'] for e in b['events']] == [2, 3, 4]
for e in b['events']:
    order(e, ['seq', 'received_at', 'key_id', 'event'])
assert b['events'][0]['event'] == {'action': 'interaction_start', 'interaction_id': 'abc-123', 'mcp_id': 'ocr_workflow_mcp_001', 'timestamp': T - 3 + 0.25, 'request_data': {'file': 'a.pdf'}}
assert '\"timestamp\": %d.25, \"request_data\"' % (T - 3) in raw, 'not the bytes the client sent'"

step "GET /api/v2/interactions (history)"
curl -s "localhost:8080/api/v2/interactions?mcp_id=ocr_workflow_mcp_001&status=completed&limit=20" \
  -H "Authorization: Bearer $KEY"
expect 200 "$RECORD_CHECK
order(b, ['interactions', 'count', 'limit', 'offset', 'next_cursor'])
assert (b['count'], b['limit'], b['offset'], b['next_cursor']) == (1, 20, 0, None), b
check_record(b['interactions'][0])"
curl -s "localhost:8080/api/v2/interactions?limit=20&cursor=1.41da48be98100000.0" -H "Authorization: Bearer $KEY"
expect 400 "assert b['error']['code'] == 'bad_parameter' and b['error']['field'] == 'cursor', b"

step "GET /api/v2/interactions/stats"
curl -s localhost:8080/api/v2/interactions/stats -H "Authorization: Bearer $KEY"
expect 200 "order(b, ['stats', 'timestamp', 'queue_size', 'records', 'average_processing_time', 'storage'])
assert b['stats'] == {'requests_received': 3, 'requests_processed': 3, 'requests_failed': 0, 'queue_size': 0}, b
order(b['stats'], ['requests_received', 'requests_processed', 'requests_failed', 'queue_size'])
assert abs(b['timestamp'] - now) < 60 and b['queue_size'] == 0
assert b['records'] == dict(total=1, active=0, started=0, in_progress=0, completed=1, failed=0, cancelled=0, stale=0, orphan=0, conflicts=0), b
order(b['records'], ['total', 'active', 'started', 'in_progress', 'completed', 'failed', 'cancelled', 'stale', 'orphan', 'conflicts'])
assert b['average_processing_time'] == 2.5
s = b['storage']
order(s, ['segments', 'bytes', 'first_seq', 'last_seq', 'oldest_event_time'])
assert (s['segments'], s['first_seq'], s['last_seq']) == (1, 1, 4) and s['bytes'] == 944 and abs(s['oldest_event_time'] - now) < 60, s"

step "GET /api/v2/performance/metrics"
curl -s "localhost:8080/api/v2/performance/metrics?time_range=24h&mcp_id=ocr_workflow_mcp_001" \
  -H "Authorization: Bearer $KEY"
expect 200 "order(b, ['time_range', 'mcp_id', 'timestamp', 'total_interactions', 'completed', 'failed', 'cancelled',
  'success_rate', 'error_rate', 'avg_processing_time', 'min_processing_time', 'max_processing_time',
  'p50_processing_time', 'p95_processing_time', 'p99_processing_time', 'bucket_seconds', 'series'])
assert (b['time_range'], b['mcp_id']) == ('24h', 'ocr_workflow_mcp_001') and abs(b['timestamp'] - now) < 60
assert (b['total_interactions'], b['completed'], b['failed'], b['cancelled']) == (1, 1, 0, 0), b
assert (b['success_rate'], b['error_rate']) == (1.0, 0.0)
assert (b['avg_processing_time'], b['min_processing_time'], b['max_processing_time']) == (2.5, 2.5, 2.5), b
for p in ('p50', 'p95', 'p99'):
    assert near(b[p + '_processing_time'], 2.5, 0.05), b
assert b['bucket_seconds'] == 3600
series = b['series']
assert len(series) == 25 and series[0]['start'] == (int(b['timestamp']) - 86400) // 3600 * 3600, series[0]
assert all(later['start'] - earlier['start'] == 3600 for earlier, later in zip(series, series[1:]))
for bucket in series:
    order(bucket, ['start', 'completed', 'failed', 'cancelled', 'avg_processing_time', 'max_processing_time'])
busy = [x for x in series if x['completed']]
assert busy == [{'start': float((T - 3) // 3600 * 3600), 'completed': 1, 'failed': 0, 'cancelled': 0, 'avg_processing_time': 2.5, 'max_processing_time': 2.5}], busy
"

step "GET /api/v2/health"
curl -s localhost:8080/api/v2/health
expect 200 "order(b, ['status', 'timestamp', 'queue_size', 'processor_running', 'storage_writable'])
assert (b['status'], b['queue_size'], b['processor_running'], b['storage_writable']) == ('healthy', 0, True, True), b
assert abs(b['timestamp'] - now) < 60"

step "GET /api/v2/events (replay)"
curl -s "localhost:8080/api/v2/events?after_seq=0&limit=1000" -H "Authorization: Bearer $KEY"
expect 200 "assert [v['seq'] for v in values] == [1, 2, 3, 4], values
for v in values:
    order(v, ['seq', 'received_at', 'key_id', 'event'])
# First the revocation of the writer key (Keys and roles), sent by the admin key.
r = values[0]['event']
assert (r['mcp_id'], r['interaction_id'], r['revocation']) == ('mcplog.keys', '$WRITER_ID', {'key_id': '$WRITER_ID'}), r
assert values[0]['key_id'] == values[1]['key_id'], values
assert [v['event']['action'] for v in values[1:]] == ['interaction_start', 'interaction_progress', 'interaction_complete']
# The first event went in with line breaks: they become spaces, one line per event.
assert raw.split('\n')[1].startswith('{\"seq\":2,') and '{   \"action\": \"interaction_start\"' in raw.split('\n')[1], raw[:600]
assert len(raw.splitlines()) == 4, raw"
curl -sN "localhost:8080/api/v2/events?after_seq=4&follow=true" -H "Authorization: Bearer $KEY"
expect 200 "assert values, 'no heartbeat within MCPLOG_FOLLOW_SECONDS: start the server with a shorter MCPLOG_REPLAY_HEARTBEAT'
for v in values:
    order(v, ['heartbeat', 'durable_seq'])
    assert v['durable_seq'] == 4 and abs(v['heartbeat'] - now) < 60, v
assert raw.count('\n') == len(values)"

step "GET /livez, /readyz, /metrics, /api/v2/openapi.json"
curl -s localhost:8080/livez              # ok
expect 200 "assert raw.strip() == 'ok', raw"
curl -s localhost:8080/readyz             # ready; 503 "shutting down" once shutdown begins, "storage unavailable" while writes fail
expect 200 "assert raw.strip() == 'ready', raw"
curl -s localhost:8080/metrics            # Prometheus text: mcplog_events_ingested_total,
expect 200 "
import re
names = set(re.findall(r'^([a-z_]+)(?:\{([a-z_]+)=)?', raw, re.M))
families = {n for n, _ in names}
for name in ['mcplog_events_ingested_total', 'mcplog_ingest_rejected_total', 'mcplog_fsync_seconds_bucket',
             'mcplog_http_request_duration_seconds_bucket', 'mcplog_queue_events', 'mcplog_segments',
             'mcplog_storage_bytes', 'mcplog_records', 'mcplog_last_seq']:
    assert name in families, (name, sorted(families))
assert ('mcplog_records', 'status') in names and ('mcplog_ingest_rejected_total', 'reason') in names, names
assert re.search(r'^mcplog_events_ingested_total 3$', raw, re.M), 'not 3 events ingested'
assert re.search(r'^mcplog_http_request_duration_seconds_bucket\{route=\"[^\"]+\",method=\"[A-Z]+\"', raw, re.M)"
curl -s localhost:8080/api/v2/openapi.json   # OpenAPI 3.1, generated from the handlers
expect 200 "assert b['openapi'].startswith('3.1') and '/api/v2/keys/revoke' in b['paths'], b.get('openapi')"

step "Offline tool: mcplog-seg"
cargo run --release --bin mcplog-seg -- ls ./data        # seqs, events, bytes, sealed/active, times, chain hash
check_tool '
lines = out.splitlines()
assert lines[0].split() == ["segment", "first_seq", "last_seq", "events", "bytes", "state", "received_from", "received_to", "chain_hash"], lines[0]
row = lines[1].split()
assert row[0] == "00000000000000000001.seg" and row[1:4] == ["1", "4", "4"] and row[5] == "active", row
assert len(lines) == 2
'
cargo run --release --bin mcplog-seg -- verify ./data    # every CRC, seq continuity, the hash chain; exit 1 at the first fault
check_tool 'assert re.fullmatch(r"ok: 1 segments, 4 events, 944 bytes; chain head [0-9a-f]{64}\n", out), out'
cargo run --release --bin mcplog-seg -- dump ./data --mcp-id ocr_workflow_mcp_001 --from-seq 3 --to-seq 4
check_tool '
lines = [json.loads(line) for line in out.splitlines()]
assert [l["seq"] for l in lines] == [3, 4], lines
assert [list(l) for l in lines] == [["seq", "received_at", "key_id", "event"]] * 2
'
cargo run --release --bin mcplog-seg -- stats ./data     # events, interactions, and record counts in the stats endpoint's shape, per mcp_id too (JSON)
check_tool '
j = json.loads(out)
assert (j["events"], j["interactions"], j["segments"], j["conflicts"]) == (3, 1, 1, 0), j
counts = {"total": 1, "active": 0, "started": 0, "in_progress": 0, "completed": 1, "failed": 0, "cancelled": 0, "stale": 0, "orphan": 0, "conflicts": 0}
assert j["records"] == counts and j["by_mcp_id"] == {"ocr_workflow_mcp_001": counts}, j
'
cargo run --release --bin mcplog-seg -- --version        # mcplog-seg 0.1.0
check_tool 'assert re.fullmatch(r"mcplog-seg \d+\.\d+\.\d+\n", out), out'
cargo run --release --bin mcplog-seg -- backup ./data ./backup        # a checked copy, even while the server writes
check_tool 'assert re.fullmatch(r"ok: 1 segments, 4 events, 944 bytes copied and checked; chain head [0-9a-f]{64}\n", out), out'
[[ -f backup/segments/00000000000000000001.seg && -f backup/admin.key ]] || fail "the backup holds no segment or key"

stop_server
printf '\nevery README example ran and answered as shown\n' >&2
