#!/usr/bin/env bash
# An MLflow tracking server for sweeps that run on a cluster.
#   cluster/mlflow-server.sh                      # 127.0.0.1:5000, store under ./mlflow-server
#   MLFLOW_HOST=0.0.0.0 cluster/mlflow-server.sh  # reachable from other nodes: only on a trusted network
# Then point sweeps at it: tracking.uri=http://<host>:5000 (or set it in the YAML).
# The tests start their MLflow server with this script.
set -euo pipefail
HOST="${MLFLOW_HOST:-127.0.0.1}"          # loopback unless you mean to expose it
PORT="${MLFLOW_PORT:-5000}"
STORE="${MLFLOW_STORE:-$PWD/mlflow-server}"
PYTHON="${PYTHON:-python}"
mkdir -p "$STORE/artifacts"
export MLFLOW_DISABLE_TELEMETRY=true
exec "$PYTHON" -m mlflow server \
    --host "$HOST" --port "$PORT" \
    --backend-store-uri "sqlite:///$STORE/mlflow.db" \
    --artifacts-destination "$STORE/artifacts" \
    --workers "${MLFLOW_WORKERS:-2}"
