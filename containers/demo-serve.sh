#!/usr/bin/env bash
# Start the serve container on MODEL (a model.tar.gz or directory) with
# `dogbreed local serve`, classify IMAGES through the Lambda handler (boto3 ->
# loopback InvokeEndpoint twin -> the container), as on AWS; print the answers
# and stop the container (also on failure: SIGTERM ends `local serve` as Ctrl-C does).
#   containers/demo-serve.sh IMAGE MODEL DOGBREED_CLI IMAGES...
set -euo pipefail
image=$1 model=$2 cli=$3
shift 3
port=${PORT:-8080}
log=$(mktemp)
"$cli" -q local serve --image "$image" --model "$model" --port "$port" >"$log" 2>&1 &
server=$!
finish() {
  status=$?
  kill -TERM "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  if [ "$status" != 0 ]; then
    echo "demo-serve: the endpoint's last lines:" >&2
    tail -n 20 "$log" >&2
  fi
  rm -f "$log"
}
trap finish EXIT
for _ in $(seq 1 240); do  # until it prints its URL (it waited for /ping), or exits
  grep -q '^endpoint: ' "$log" && break
  kill -0 "$server" 2>/dev/null || exit 1
  sleep 1
done
"$cli" -q lambda-local --server "http://127.0.0.1:$port" --wait 120 "$@"
