#!/usr/bin/env bash
# `make minio-demo`: the whole graph on the `minio` deployment — artifacts in an S3 bucket through
# the minio SDK, Dagster's instance in PostgreSQL 15 (deploy/postgres/dagster.yaml).
#
# With INTELLIGENCE_S3_ENDPOINT / _ACCESS_KEY / _SECRET_KEY set, it uses that MinIO (or any S3
# endpoint). Without, it starts a stand-in S3 endpoint (moto server, in memory) on 127.0.0.1:9000
# and leaves it running, so the stored layout can be listed afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

export INTELLIGENCE_PG_DATABASE="${INTELLIGENCE_PG_DATABASE:-intelligence_demo}"
eval "$(scripts/start_postgres.sh)"

export DAGSTER_HOME="${DAGSTER_HOME_MINIO:-$PWD/.dagster_home_minio}"
mkdir -p "$DAGSTER_HOME"
cp deploy/postgres/dagster.yaml "$DAGSTER_HOME/dagster.yaml"

if [[ -z "${INTELLIGENCE_S3_ENDPOINT:-}" ]]; then
    port=9000
    export INTELLIGENCE_S3_ENDPOINT="127.0.0.1:$port"
    export INTELLIGENCE_S3_ACCESS_KEY="${INTELLIGENCE_S3_ACCESS_KEY:-demo-access-key}"
    export INTELLIGENCE_S3_SECRET_KEY="${INTELLIGENCE_S3_SECRET_KEY:-demo-secret-key}"
    if ! .venv/bin/python -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; then
        echo "minio-demo: starting a stand-in S3 endpoint (moto server, in memory) on $INTELLIGENCE_S3_ENDPOINT"
        setsid .venv/bin/moto_server -H 127.0.0.1 -p "$port" >"$DAGSTER_HOME/moto_server.log" 2>&1 < /dev/null &
        for _ in $(seq 1 60); do
            .venv/bin/python -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
            sleep 0.5
        done
    fi
fi
export INTELLIGENCE_S3_BUCKET="${INTELLIGENCE_S3_BUCKET:-intelligence-assets}"
export INTELLIGENCE_DEPLOYMENT=minio

echo "minio-demo: instance in PostgreSQL $DAGSTER_PG_HOST:$DAGSTER_PG_PORT/$DAGSTER_PG_DB, artifacts in s3://$INTELLIGENCE_S3_BUCKET at $INTELLIGENCE_S3_ENDPOINT"
.venv/bin/python -m intelligence_assets.cli.demo

echo
echo "Stored layout (first objects), listed with the minio SDK:"
.venv/bin/python - <<'PY'
import itertools, os
from minio import Minio
client = Minio(os.environ["INTELLIGENCE_S3_ENDPOINT"], os.environ["INTELLIGENCE_S3_ACCESS_KEY"], os.environ["INTELLIGENCE_S3_SECRET_KEY"], secure=False)
objects = client.list_objects(os.environ["INTELLIGENCE_S3_BUCKET"], prefix="models/lightgbm/", recursive=True)
for item in itertools.islice(objects, 12):
    print(f"  {item.size:>9}  s3://{item.bucket_name}/{item.object_name}")
PY
echo "The same with a standard client:"
echo "  AWS_ACCESS_KEY_ID=$INTELLIGENCE_S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=... aws s3 ls --endpoint-url http://$INTELLIGENCE_S3_ENDPOINT s3://$INTELLIGENCE_S3_BUCKET/ --recursive"
