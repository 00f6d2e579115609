#!/usr/bin/env bash
# `make demo`: start the local S3 server, stage the real demo corpus, run the pipeline on it.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR=.local/s3
BUCKET=audioverse-demo

.venv/bin/python -m infra.local_s3 start --data-dir "$DATA_DIR" --bucket "$BUCKET"
eval "$(.venv/bin/python -m infra.local_s3 env --data-dir "$DATA_DIR")"
.venv/bin/python -m infra.demo_corpus demo --uri "s3://$BUCKET/raw/"

set +e
.venv/bin/audioverse run configs/local.yaml "$@"
code=$?
set -e
cat <<TXT

The local S3 server keeps running so you can look at the results (endpoint $AWS_ENDPOINT_URL).
  read them:   eval "\$(.venv/bin/python -m infra.local_s3 env)"
               .venv/bin/python -c "import pandas as pd; print(pd.read_parquet('s3://$BUCKET/runs/<run_id>/annotations/'))"
  stop it:     make s3-stop
TXT
exit $code
