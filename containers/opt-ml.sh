#!/usr/bin/env bash
# Lay out a SageMaker /opt/ml tree: OPT_ML/input/{config,data/training} from DATA.
#   containers/opt-ml.sh OPT_ML DATA HYPERPARAMETERS_JSON
set -euo pipefail
root=$1 data=$2 hps=$3
rm -rf "$root"
mkdir -p "$root/input/config" "$root/input/data" "$root/model" "$root/output" "$root/checkpoints"
cp -r "$data" "$root/input/data/training"
# SageMaker writes every hyperparameter value as a string.
python3 -c 'import json,sys; print(json.dumps({k: str(v) for k, v in json.loads(sys.argv[1]).items()}))' \
  "$hps" > "$root/input/config/hyperparameters.json"
echo '{"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "lo"}' \
  > "$root/input/config/resourceconfig.json"
echo '{"training": {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"}}' \
  > "$root/input/config/inputdataconfig.json"
chmod -R a+rwX "$root"
