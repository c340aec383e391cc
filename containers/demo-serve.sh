#!/usr/bin/env bash
# Start the serve container on MODEL_DIR, classify IMAGES through the Lambda
# handler (boto3 -> loopback InvokeEndpoint twin -> the container), as on AWS;
# print the answers and stop the container (also on failure).
#   containers/demo-serve.sh IMAGE MODEL_DIR DOGBREED_CLI IMAGES...
set -euo pipefail
image=$1 model=$2 cli=$3
shift 3
port=${PORT:-8080}
name=dogbreed-demo-serve-$$
docker run -d --rm --name "$name" --network host -e SAGEMAKER_BIND_TO_PORT="$port" \
  -v "$(cd "$model" && pwd)":/opt/ml/model:ro "$image" serve >/dev/null
trap 'docker stop -t 20 "$name" >/dev/null 2>&1 || true' EXIT
"$cli" -q lambda-local --server "http://127.0.0.1:$port" --wait 120 "$@"
