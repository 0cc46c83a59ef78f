#!/usr/bin/env bash
# End-to-end demo on this machine only: a local moto Secrets Manager, a secret whose rotation
# failed, the rescue function run by `cargo lambda watch`, and the secret before and after.
#
#   make demo                        # or: bash scripts/demo.sh [SECRET_NAME]
#
# Every server binds 127.0.0.1 on a free port, and everything started here is stopped on exit.
# Needs `make venv` (moto, cargo-lambda, boto3 in .venv) and cargo.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

SECRET_NAME=${1:-demo/db-password}
BINARY=rotation-rescue-lambda
EVENT_TEMPLATE=events/rotation-failed.json
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

heading "1. Local Secrets Manager (moto)"
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
LAMBDA_PORT=$(free_port)
setsid cargo lambda watch --release --bin "$BINARY" --ignore-changes \
  --timeout "$INVOKE_TIMEOUT" -A 127.0.0.1 -P "$LAMBDA_PORT" >"$WORK/watch.log" 2>&1 &
STARTED+=($!)
wait_for_port "$LAMBDA_PORT" 60
echo "function emulator listening on 127.0.0.1:$LAMBDA_PORT (log: watch.log, shown in step 7)"

heading "6. Invoke with a RotationFailed event for the seeded secret"
EVENT_FILE=$WORK/rotation-failed.json
python3 - "$EVENT_TEMPLATE" "$EVENT_FILE" "$SECRET_ARN" <<'PY'
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
SUMMARY=$WORK/summary.json
if ! timeout "$((INVOKE_TIMEOUT + 30))" cargo lambda invoke "$BINARY" \
  -A 127.0.0.1 -P "$LAMBDA_PORT" --data-file "$EVENT_FILE" >"$SUMMARY"; then
  echo "demo: invoke failed; function log follows" >&2
  cat "$WORK/watch.log" >&2
  exit 1
fi
echo "summary:"
python3 -m json.tool "$SUMMARY" || cat "$SUMMARY"

heading "7. Function log"
cat "$WORK/watch.log"

heading "8. After the rescue"
python3 scripts/show_secret.py "$SECRET_ARN"

heading "Done: stopping moto and the function"
