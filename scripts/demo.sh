#!/usr/bin/env bash
# End-to-end demo on this machine only: a local moto Secrets Manager and SQS, the rescue
# function run by `cargo lambda watch`, and each secret before and after.
#
#   Part 1: a failed rotation rescued at once (RESCUE_GRACE=0).
#   Part 2: a failed rotation deferred for Secrets Manager's own retry (RESCUE_GRACE=5s instead
#           of the default 15m), re-checked through a delayed SQS message, then rescued. moto
#           cannot age a version, so the re-check itself runs with RESCUE_GRACE=0.
#
#   make demo                        # or: bash scripts/demo.sh [SECRET_NAME [SECOND_SECRET_NAME]]
#
# Every server binds 127.0.0.1 on a free port, and everything started here is stopped on exit.
# Needs `make venv` (moto, cargo-lambda, boto3 in .venv) and cargo.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

SECRET_NAME=${1:-demo/db-password}
SECOND_SECRET_NAME=${2:-demo/api-password}
BINARY=rotation-rescue-lambda
EVENT_TEMPLATE=events/rotation-failed.json
# Part 2: the grace and the re-check's minimum delay, shortened for the demo.
DEMO_GRACE=5s
DEMO_MIN_DELAY=1s
VENV_BIN=${VENV_BIN:-$ROOT/.venv/bin}
INVOKE_TIMEOUT=${INVOKE_TIMEOUT:-120}

if [[ ! -x $VENV_BIN/moto_server || ! -x $VENV_BIN/cargo-lambda ]]; then
  echo "demo: $VENV_BIN lacks moto_server or cargo-lambda; run 'make venv' first" >&2
  exit 1
fi
# The venv's python3 has boto3, and cargo finds `cargo lambda` there.
export PATH=$VENV_BIN:$PATH

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rotation-rescue-demo.XXXXXX")
STARTED=()

# Each server runs in a session of its own (setsid), so stopping its process group also stops
# what it spawned (cargo lambda watch runs the function through `cargo run`).
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  for pid in "${STARTED[@]}"; do
    kill -TERM -- "-$pid" 2>/dev/null || true
  done
  for pid in "${STARTED[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

heading() {
  printf '\n==== %s ====\n' "$*"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until something accepts TCP connections on 127.0.0.1:$1, or fails after $2 seconds.
wait_for_port() {
  python3 - "$1" "$2" <<'PY'
import socket, sys, time
port, deadline = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.2)
sys.exit(f"demo: nothing listens on 127.0.0.1:{port}")
PY
}

# Starts `cargo lambda watch` on a free port; VAR=value arguments are added to the environment,
# which the function inherits. Sets LAMBDA_PORT and LAMBDA_PID.
start_function() {
  local log=$1
  shift
  LAMBDA_PORT=$(free_port)
  env "$@" setsid cargo lambda watch --release --bin "$BINARY" --ignore-changes \
    --timeout "$INVOKE_TIMEOUT" -A 127.0.0.1 -P "$LAMBDA_PORT" >"$WORK/$log" 2>&1 &
  LAMBDA_PID=$!
  STARTED+=("$LAMBDA_PID")
  wait_for_port "$LAMBDA_PORT" 60
  # The watch starts the function on its first invoke: start it now with a harmless event
  # (RotationSucceeded needs nothing), so that the events below, stamped just before they are
  # sent, reach a running function at once.
  invoke_function events/rotation-succeeded.json "$WORK/warm-up.json" "$log"
}

stop_function() {
  kill -TERM -- "-$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# Invokes the function on $LAMBDA_PORT with the payload file $1 and writes the answer to $2;
# on failure, shows the function log $3 (a file in $WORK).
invoke_function() {
  if ! timeout "$((INVOKE_TIMEOUT + 30))" cargo lambda invoke "$BINARY" \
    -A 127.0.0.1 -P "$LAMBDA_PORT" --data-file "$1" >"$2"; then
    echo "demo: invoke failed; function log follows" >&2
    cat "$WORK/$3" >&2
    exit 1
  fi
}

# Writes to $2 a RotationFailed event for the secret $1, stamped now, naming the secret's
# rotation function and the testSecret step.
rotation_failed_event() {
  python3 - "$EVENT_TEMPLATE" "$2" "$1" <<'PY'
import datetime, json, os, sys
import boto3

template, out, arn = sys.argv[1:4]
with open(template) as f:
    event = json.load(f)
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
client = boto3.client("secretsmanager", region_name=os.environ["AWS_REGION"])
rotator = client.describe_secret(SecretId=arn).get("RotationLambdaARN", "")
detail = event["detail"]
event["time"] = detail["eventTime"] = now
detail["additionalEventData"]["SecretId"] = arn
detail["requestID"] = f"Rotation-{arn}-demo"
if rotator:
    detail["errorMessage"] = f"Error when executing lambda {rotator} during testSecret step"
with open(out, "w") as f:
    json.dump(event, f, indent=2)
print(f"event: SecretId={arn} time={now}")
PY
}

show_json() {
  python3 -m json.tool "$1" || cat "$1"
}

heading "Part 1: a failed rotation rescued at once"
echo "With RESCUE_GRACE=0 the first RotationFailed event rescues the secret, without waiting."

heading "1. Local Secrets Manager and SQS (moto)"
MOTO_PORT=$(free_port)
setsid "$VENV_BIN/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$WORK/moto.log" 2>&1 &
STARTED+=($!)
wait_for_port "$MOTO_PORT" 30
echo "moto listening on 127.0.0.1:$MOTO_PORT"

# Everything below (the scripts and the function) talks to moto only, with dummy credentials.
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL_SECRETS_MANAGER
export AWS_ENDPOINT_URL=http://127.0.0.1:$MOTO_PORT
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=demo
export AWS_SECRET_ACCESS_KEY=demo
export AWS_EC2_METADATA_DISABLED=true
export RESCUE_ACCOUNT_ID=123456789012  # moto's default account
export RESCUE_GRACE=0
export RESCUE_ALARM_MIN_AGE=0  # no alarm here; with both waits at 0 no queue is needed

heading "2. Seed a failed rotation: $SECRET_NAME"
SECRET_ARN=$(python3 scripts/seed_failed_rotation.py "$SECRET_NAME")
echo "secret ARN: $SECRET_ARN"

heading "3. Before the rescue"
python3 scripts/show_secret.py "$SECRET_ARN"

heading "4. Build $BINARY (release)"
# The same command that `cargo lambda watch --release --bin $BINARY` runs (as `cargo run`), so
# the watch below finds the binary fresh and starts it at once.
cargo build --release --bin "$BINARY"

heading "5. Start the function (cargo lambda watch)"
start_function watch.log
echo "function emulator listening on 127.0.0.1:$LAMBDA_PORT (log: watch.log, shown in step 7)"
echo "config: RESCUE_GRACE=0 (immediate rescue)"

heading "6. Invoke with a RotationFailed event for the seeded secret"
EVENT_FILE=$WORK/rotation-failed.json
rotation_failed_event "$SECRET_ARN" "$EVENT_FILE"
SUMMARY=$WORK/summary.json
invoke_function "$EVENT_FILE" "$SUMMARY" watch.log
echo "summary:"
show_json "$SUMMARY"

heading "7. Function log of part 1"
cat "$WORK/watch.log"

heading "8. After the rescue"
python3 scripts/show_secret.py "$SECRET_ARN"

heading "Part 2: a deferred secret rescued by its re-check"
echo "Secrets Manager retries a failed rotation itself, so by default (RESCUE_GRACE=15m) the"
echo "function waits, and sends itself a delayed SQS message to look at the secret again."
echo "Shortened for the demo: RESCUE_GRACE=$DEMO_GRACE, RESCUE_RECHECK_MIN_DELAY=$DEMO_MIN_DELAY."

heading "9. Seed a second failed rotation: $SECOND_SECRET_NAME"
SECOND_ARN=$(python3 scripts/seed_failed_rotation.py "$SECOND_SECRET_NAME")
echo "secret ARN: $SECOND_ARN"
python3 scripts/show_secret.py "$SECOND_ARN"

heading "10. Create the re-check queue (moto SQS)"
echo "The stack's RecheckQueue; the function sends deferred secrets' re-checks to it."
QUEUE_URL=$(python3 scripts/recheck_queue.py create rotation-rescue-recheck)
echo "queue URL: $QUEUE_URL"

heading "11. Start the function with a grace (a second cargo lambda watch)"
echo "Same release binary; the watch passes its environment on to the function."
start_function watch-grace.log RESCUE_GRACE="$DEMO_GRACE" \
  RESCUE_RECHECK_MIN_DELAY="$DEMO_MIN_DELAY" RESCUE_RECHECK_QUEUE_URL="$QUEUE_URL"
GRACE_PID=$LAMBDA_PID
echo "function emulator listening on 127.0.0.1:$LAMBDA_PORT (log: watch-grace.log, step 16)"
echo "config: RESCUE_GRACE=$DEMO_GRACE RESCUE_RECHECK_MIN_DELAY=$DEMO_MIN_DELAY" \
  "RESCUE_RECHECK_QUEUE_URL=$QUEUE_URL"

heading "12. Invoke with a RotationFailed event: the young stuck version is deferred"
echo "The stuck version is younger than the grace: nothing is changed, a re-check is queued."
EVENT_FILE=$WORK/rotation-failed-2.json
rotation_failed_event "$SECOND_ARN" "$EVENT_FILE"
SUMMARY=$WORK/summary-deferred.json
invoke_function "$EVENT_FILE" "$SUMMARY" watch-grace.log
echo "summary:"
show_json "$SUMMARY"
RECHECK_IN=$(python3 -c '
import json, sys
[report] = json.load(open(sys.argv[1]))["secrets"]
if report["outcome"] != "deferred" or "recheck_in_seconds" not in report:
    sys.exit("demo: expected a deferred secret with recheck_in_seconds")
print(report["recheck_in_seconds"])' "$SUMMARY")

heading "13. The re-check message waits in the queue for ${RECHECK_IN} s"
echo "Sent with DelaySeconds=$RECHECK_IN (the time left of the grace, at least the minimum)."
SQS_EVENT=$WORK/recheck-sqs.json
python3 scripts/recheck_queue.py receive "$QUEUE_URL" "$SQS_EVENT" --wait 20

heading "14. The re-check as Lambda delivers it: an SQS batch"
echo "Lambda's SQS poller hands the function a batch of Records (eventSource aws:sqs)."
show_json "$SQS_EVENT"

heading "15. Invoke with the SQS batch: the re-check rescues the secret"
echo "moto cannot age a version: its ListSecretVersionIds reports CreatedDate as the time of the"
echo "listing, so the stuck version always looks brand new and never older than any grace. The"
echo "re-check therefore runs with the grace shortened to 0 (same binary, restarted watch); on"
echo "AWS the version is ${RECHECK_IN} s old by now and RESCUE_GRACE=$DEMO_GRACE rescues it."
stop_function "$GRACE_PID"
start_function watch-recheck.log RESCUE_GRACE=0 \
  RESCUE_RECHECK_MIN_DELAY="$DEMO_MIN_DELAY" RESCUE_RECHECK_QUEUE_URL="$QUEUE_URL"
echo "config: RESCUE_GRACE=0 RESCUE_RECHECK_MIN_DELAY=$DEMO_MIN_DELAY" \
  "RESCUE_RECHECK_QUEUE_URL=$QUEUE_URL (log: watch-recheck.log)"
RESPONSE=$WORK/recheck-response.json
invoke_function "$SQS_EVENT" "$RESPONSE" watch-recheck.log
echo "response (partial batch response: no message to deliver again):"
cat "$RESPONSE"
echo
echo "Lambda deletes the batch's messages that are not listed in batchItemFailures:"
python3 scripts/recheck_queue.py delete "$QUEUE_URL" "$SQS_EVENT"
python3 scripts/recheck_queue.py show "$QUEUE_URL"

heading "16. Function logs of part 2"
echo "-- deferral (RESCUE_GRACE=$DEMO_GRACE) --"
cat "$WORK/watch-grace.log"
echo "-- re-check (RESCUE_GRACE=0) --"
cat "$WORK/watch-recheck.log"

heading "17. After the re-check"
python3 scripts/show_secret.py "$SECOND_ARN"

heading "Done: stopping moto and the functions"
