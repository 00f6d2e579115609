#!/usr/bin/env bash
# `make demo`: start the local S3 server, stage the real demo corpus, run the pipeline on it,
# build a release over every committed demo run, and write the audit reports of the run and of
# the release (two folders: a run and a release of one demo share the id demo-<stamp>).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR=.local/s3
BUCKET=audioverse-demo

.venv/bin/python -m infra.local_s3 start --data-dir "$DATA_DIR" --bucket "$BUCKET"
eval "$(.venv/bin/python -m infra.local_s3 env --data-dir "$DATA_DIR")"
.venv/bin/python -m infra.demo_corpus demo --uri "s3://$BUCKET/raw/"

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
RUN_ID="demo-$STAMP"
RELEASE_ID="demo-$STAMP"
RUN_REPORT=".local/audit-run-$RUN_ID"
RELEASE_REPORT=".local/audit-release-$RELEASE_ID"
set +e
.venv/bin/audioverse run configs/local.yaml --run-id "$RUN_ID" "$@"
code=$?
if [ $code -eq 0 ]; then
  .venv/bin/audioverse audit "s3://$BUCKET/runs/$RUN_ID/" --out "$RUN_REPORT"
  code=$?
fi
if [ $code -eq 0 ]; then
  # Runs are incremental: a second `make demo` finds nothing new to annotate (see the ledger).
  .venv/bin/audioverse status configs/local.yaml
  # The release is over the whole dataset view: every committed demo run so far.
  .venv/bin/audioverse release configs/local.yaml --release-id "$RELEASE_ID"
  code=$?
fi
if [ $code -eq 0 ]; then
  .venv/bin/audioverse audit "s3://$BUCKET/releases/$RELEASE_ID/" --out "$RELEASE_REPORT"
  code=$?
fi
set -e
cat <<TXT

Results on the local S3 server ($AWS_ENDPOINT_URL), which keeps running so you can read them:
  run      s3://$BUCKET/runs/$RUN_ID/          annotations/, rejects/, summary.json
  release  s3://$BUCKET/releases/$RELEASE_ID/  train/ validation/ test/ shards, selection/, manifest.json
  reports  $RUN_REPORT/index.html      the run: figures, examples with clips, vs the previous run
           $RELEASE_REPORT/index.html  the release (open them in a browser)
Query them:
  eval "\$(.venv/bin/python -m infra.local_s3 env)"
  .venv/bin/audioverse audit s3://$BUCKET/runs/$RUN_ID/ --sql "SELECT content_type, count(*) FROM annotations GROUP BY 1"
  .venv/bin/python -c "import pandas as pd; print(pd.read_parquet('s3://$BUCKET/runs/$RUN_ID/annotations/'))"
Stop the server with: make s3-stop
TXT
exit $code
