#!/usr/bin/env bash
# `make demo`: start the local S3 server, stage the real demo corpus, run the pipeline on it.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR=.local/s3
BUCKET=audioverse-demo

.venv/bin/python -m infra.local_s3 start --data-dir "$DATA_DIR" --bucket "$BUCKET"
eval "$(.venv/bin/python -m infra.local_s3 env --data-dir "$DATA_DIR")"
.venv/bin/python -m infra.demo_corpus demo --uri "s3://$BUCKET/raw/"

RUN_ID="demo-$(date -u +%Y%m%dT%H%M%SZ)"
set +e
.venv/bin/audioverse run configs/local.yaml --run-id "$RUN_ID" "$@"
code=$?
set -e
cat <<TXT

Results: s3://$BUCKET/runs/$RUN_ID/ on the local S3 server ($AWS_ENDPOINT_URL), which keeps
running so you can read them:
  eval "\$(.venv/bin/python -m infra.local_s3 env)"
  .venv/bin/python -c "import pandas as pd; print(pd.read_parquet('s3://$BUCKET/runs/$RUN_ID/annotations/'))"
  .venv/bin/python -c "import pandas as pd; print(pd.read_parquet('s3://$BUCKET/runs/$RUN_ID/rejects/'))"
Stop the server with: make s3-stop
TXT
exit $code
