#!/usr/bin/env bash
# Start the serve container on MODEL (a model.tar.gz or directory) with
# `dogbreed local serve`, classify IMAGES through the Lambda handler (boto3 ->
# loopback InvokeEndpoint twin -> the container), as on AWS, print a table of
# the answers (image, breed, score) and stop the container (also on failure:
# SIGTERM ends `local serve` as Ctrl-C does).
#   containers/demo-serve.sh IMAGE MODEL DOGBREED_CLI IMAGES...
# Logs go to LOG_DIR (default: logs/ beside MODEL's folder, artifacts/demo/logs in
# `make demo`): serve.log (the endpoint) and lambda.log (the handler's JSON lines).
set -euo pipefail
image=$1 model=$2 cli=$3
shift 3
port=${PORT:-8080}
logdir=${LOG_DIR:-$(dirname "$(dirname "$model")")/logs}
mkdir -p "$logdir"
serve_log=$logdir/serve.log lambda_log=$logdir/lambda.log
answers=$(mktemp)
: >"$lambda_log"
"$cli" local serve --image "$image" --model "$model" --port "$port" >"$serve_log" 2>&1 &
server=$!
finish() {
  status=$?
  kill -TERM "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  if [ "$status" != 0 ]; then
    echo "demo-serve: the endpoint's last lines ($serve_log):" >&2
    tail -n 20 "$serve_log" >&2
  fi
  rm -f "$answers"
}
trap finish EXIT
echo "demo-serve: starting the endpoint (log: $serve_log)"
for _ in $(seq 1 240); do  # until it prints its URL (it waited for /ping), or exits
  grep -q '^endpoint: ' "$serve_log" && break
  kill -0 "$server" 2>/dev/null || exit 1
  sleep 1
done
echo "demo-serve: classifying $# images through the Lambda handler -> endpoint"
if ! "$cli" -q lambda-local --server "http://127.0.0.1:$port" --wait 120 "$@" \
  >"$answers" 2>>"$lambda_log"; then
  cat "$answers" >>"$lambda_log"
  echo "demo-serve: the Lambda handler's last lines ($lambda_log):" >&2
  tail -n 5 "$lambda_log" >&2
  exit 1
fi

# Answer lines are `PATH: BREED (index N, p=SCORE)`; anything else (the handler's
# JSON log line per request) belongs in its log.
answer='^(.*): (.*) \(index ([0-9]+), p=([0-9.]+)\)$'
paths=() breeds=() scores=()
width=5 breed_width=5
while IFS= read -r line; do
  if [[ $line =~ $answer ]]; then
    path=${BASH_REMATCH[1]}
    path=$(basename "$(dirname "$path")")/$(basename "$path")  # CLASS_FOLDER/FILE
    paths+=("$path") breeds+=("${BASH_REMATCH[2]}") scores+=("${BASH_REMATCH[4]}")
    if ((${#path} > width)); then width=${#path}; fi
    if ((${#BASH_REMATCH[2]} > breed_width)); then breed_width=${#BASH_REMATCH[2]}; fi
  else
    printf '%s\n' "$line" >>"$lambda_log"
  fi
done <"$answers"
if [ "${#paths[@]}" = 0 ]; then
  echo "demo-serve: no answers from the Lambda handler (see $lambda_log)" >&2
  exit 1
fi
echo
printf '%-*s  %-*s  %s\n' "$width" image "$breed_width" breed score
for i in "${!paths[@]}"; do
  printf '%-*s  %-*s  %s\n' "$width" "${paths[$i]}" "$breed_width" "${breeds[$i]}" "${scores[$i]}"
done
echo
echo "logs:    $serve_log (endpoint), $lambda_log (Lambda handler)"
