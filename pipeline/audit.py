"""`audioverse audit URI`: DuckDB over a committed run's or a finished release's Parquet on S3.

    audioverse audit s3://bucket/out/runs/<run_id>/                 # HTML report + PNG plots
    audioverse audit s3://bucket/out/releases/<id>/ --sql "..."      # ad-hoc SQL, text table
    audioverse audit s3://bucket/out/runs/<run_id>/ --sql "..." --format csv > out.csv

The kind is detected from the commit marker at the URI: `summary.json` (a run, see
pipeline/publish.py) or `manifest.json` (a release, see schemas/release.py). The DuckDB views are
built from exactly the data files that marker lists, never from a directory listing, so files
left by an unfinished attempt are never read:

    run:      annotations (ANNOTATIONS_SCHEMA), rejects (REJECTS_SCHEMA)
    release:  selection (SELECTION_SCHEMA), shards (SHARD_SCHEMA without the `codes` column)

DuckDB reaches S3 through fsspec: an `s3fs.S3FileSystem` built from the storage config (or the
standard AWS_* variables) is registered on the connection, so `read_parquet('s3://...')` needs no
DuckDB extension (httpfs is neither downloaded nor auto-loaded).
"""
from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from pipeline.errors import EXIT_CONFIG, AudioverseError, ConfigError, exit_codes_help

RUN, RELEASE = "run", "release"
SUMMARY_FILE, MANIFEST_FILE = "summary.json", "manifest.json"
DEFAULT_LIMIT = 50  # rows of a --sql result in the text table; csv and json print all rows
FORMATS = ("table", "csv", "json")
MAX_CELL = 80  # characters of one cell in the --sql text table

AUDIT_EPILOG = """views:
  a run      (s3://.../runs/<run_id>/):        annotations, rejects
  a release  (s3://.../releases/<release_id>/): selection, shards (without the codes column)
  Only the files listed in summary.json / manifest.json are read.

examples:
  # hours kept per language and content type in a run
  audioverse audit s3://bucket/out/runs/20250101T000000Z/ --sql \\
    "SELECT language, content_type, round(sum(duration_s)/3600, 2) AS hours
     FROM annotations WHERE drop_reason IS NULL GROUP BY ALL ORDER BY hours DESC"

  # why eligible segments of a release were not selected, per stratum
  audioverse audit s3://bucket/out/releases/r7/ --sql \\
    "SELECT stratum, count(*) FILTER (WHERE selected) AS selected,
            count(*) FILTER (WHERE quality_eligible AND NOT selected) AS eligible_not_selected
     FROM selection GROUP BY 1 ORDER BY 1"

  # every kept segment of one language as CSV (csv and json print every row)
  audioverse audit s3://bucket/out/runs/20250101T000000Z/ --format csv --sql \
    "SELECT segment_id, transcript FROM annotations WHERE language = 'fr'" > fr.csv

  # several statements: each result is printed, in order
  audioverse audit s3://bucket/out/runs/20250101T000000Z/ --sql \
    "SELECT count(*) FROM annotations; SELECT count(*) FROM rejects"

  # the HTML report (index.html + PNGs) into ./audit-run-<run_id>/
  audioverse audit s3://bucket/out/runs/20250101T000000Z/

""" + exit_codes_help("audit")


class AuditSQLError(AudioverseError):
    """The --sql query failed in DuckDB (parse, bind or run)."""

    exit_code = EXIT_CONFIG
    kind = "SQL error"


# --- command line ----------------------------------------------------------------------------
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def add_audit_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `audit` subcommand to an argparse subparsers object; returns its parser."""
    audit = subparsers.add_parser(
        "audit",
        help="SQL and an HTML report over a run's or a release's Parquet on S3",
        description="Open a committed run (summary.json) or a finished release (manifest.json)\n"
                    "in DuckDB. Without --sql, write an HTML report with PNG plots (hours by\n"
                    "language and content type, kept fraction, drop reasons, quality scores and\n"
                    "quality by language, durations, event tags, speaker counts), example rows\n"
                    "per reason, language and content type with audio clips, and the change\n"
                    "since the previous run or release; with --sql, print the result of each\n"
                    "statement as a text table, CSV or JSON (--format).",
        epilog=AUDIT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    audit.add_argument("uri", help="s3://bucket/prefix/runs/<run_id>/ or s3://bucket/prefix/"
                                   "releases/<release_id>/ (trailing / optional)")
    audit.add_argument("--config", default=None, metavar="CONFIG",
                       help="YAML config whose `storage:` section says how to reach S3 "
                            "(default: the AWS_* environment variables)")
    mode = audit.add_mutually_exclusive_group()
    mode.add_argument("--sql", default=None, metavar="QUERY",
                      help="run DuckDB SQL over the views (one statement or several, "
                           "separated by ;), print each result and exit (no report)")
    mode.add_argument("--out", default=None, metavar="DIR",
                      help="directory for index.html and the PNGs (default: "
                           "./audit-run-<run_id>/ or ./audit-release-<release_id>/)")
    audit.add_argument("--no-clips", action="store_true",
                       help="report without audio clips in the examples (the rows stay); the "
                            "clips are read again from the source objects")
    audit.add_argument("--format", choices=FORMATS, default="table",
                       help="--sql output: an aligned text table (default), CSV with a header "
                            "row, or JSON (an array of row objects; one line per statement)")
    audit.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                       help=f"rows of each --sql result to print (default: {DEFAULT_LIMIT} for "
                            f"the table, all for csv and json)")
    return audit


# --- what is at the URI ------------------------------------------------------------------------
@dataclass
class AuditSource:
    """A committed run or a finished release, and the data files its marker lists."""

    kind: str                      # run | release
    uri: str                       # normalised, ends with "/"
    ident: str                     # run id or release id
    marker: str                    # summary.json | manifest.json
    meta: dict                     # the marker's JSON
    files: dict[str, list[dict]] = field(default_factory=dict)  # view -> [{"uri", "rows"}]


def normalise_uri(uri: str) -> str:
    if not uri.startswith("s3://") or len(uri.rstrip("/")) <= len("s3://"):
        raise ConfigError(f"URI must look like s3://bucket/prefix/runs/<run_id>/ or "
                          f"s3://bucket/prefix/releases/<release_id>/, got {uri!r}")
    return uri.rstrip("/") + "/"


def _abs(prefix: str, path: str) -> str:
    return path if path.startswith("s3://") else prefix + path.lstrip("/")


def _file_entries(prefix: str, entries, where: str) -> list[dict]:
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ConfigError(f"{where} is not a list")
    out = []
    for entry in entries:
        if isinstance(entry, str):  # manifests before the distributed selection: bare paths
            out.append({"uri": _abs(prefix, entry), "rows": None})
        elif isinstance(entry, dict) and isinstance(entry.get("path"), str):
            out.append({"uri": _abs(prefix, entry["path"]), "rows": entry.get("rows")})
        else:
            raise ConfigError(f"{where} has an entry without a path: {entry!r}")
    return out


def _read_json(store, uri: str):
    from model_serving.s3client import StorageError

    try:
        return json.loads(store.get(uri))
    except json.JSONDecodeError as exc:
        raise StorageError(f"{uri} is not valid JSON ({exc})") from exc


def locate(store, uri: str) -> AuditSource:
    """Read summary.json or manifest.json at `uri` and list the files of each view."""
    from model_serving.s3client import StorageError

    prefix = normalise_uri(uri)
    # the same one-line error as `run` and `status` for a wrong endpoint, key or bucket
    store.check_bucket(prefix)
    ident = prefix.rstrip("/").rsplit("/", 1)[-1]
    order = [(RUN, SUMMARY_FILE), (RELEASE, MANIFEST_FILE)]
    if "/releases/" in prefix:
        order.reverse()
    for kind, marker in order:
        if store.exists(prefix + marker):
            meta = _read_json(store, prefix + marker)
            break
    else:
        raise StorageError(f"no {SUMMARY_FILE} or {MANIFEST_FILE} under {prefix}: not a "
                           f"committed run or a finished release")
    if not isinstance(meta, dict):
        raise StorageError(f"{prefix}{marker} does not hold a JSON object")
    where = f"{prefix}{marker}"
    src = AuditSource(kind, prefix, ident, marker, meta)
    try:
        if kind == RUN:
            files = meta.get("files")
            if not isinstance(files, dict):
                raise ConfigError(f"{where} has no 'files' section")
            for view in ("annotations", "rejects"):
                src.files[view] = _file_entries(prefix, files.get(view), f"{where} files.{view}")
        else:
            src.files["selection"] = _file_entries(prefix, meta.get("selection_files"),
                                                   f"{where} selection_files")
            splits = meta.get("splits") or {}
            if not isinstance(splits, dict):
                raise ConfigError(f"{where} 'splits' is not an object")
            shards = []
            for split in sorted(splits):
                shards += _file_entries(prefix, (splits[split] or {}).get("shards"),
                                        f"{where} splits.{split}.shards")
            src.files["shards"] = shards
    except ConfigError as exc:  # a malformed marker is a problem of what is stored
        raise StorageError(str(exc)) from exc
    return src


# --- DuckDB ----------------------------------------------------------------------------------
def error_line(exc: BaseException) -> str:
    """A DuckDB error as one line: no caret diagram, no embedded Python traceback (errors raised
    in s3fs reach DuckDB as traceback text; only its last line, the exception, is kept)."""
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if any(ln.startswith("Traceback (most recent call last)") for ln in lines):
        exc_lines = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception)\b", ln)]
        lines = exc_lines[-1:] or lines[-1:]
    kept = []
    for ln in lines:
        if ln.startswith("LINE ") or set(ln) <= {"^", " "}:
            break
        kept.append(ln)
    return " ".join(kept or lines[:1]) or type(exc).__name__


def make_filesystem(storage):
    """An s3fs filesystem for the resolved storage config (None fields: botocore's defaults)."""
    import s3fs

    from model_serving.s3client import resolve_storage

    cfg = resolve_storage(storage)
    return s3fs.S3FileSystem(
        key=cfg.access_key_id, secret=cfg.secret_access_key,
        endpoint_url=cfg.endpoint_url,
        client_kwargs={"region_name": cfg.region},
        config_kwargs={
            "connect_timeout": cfg.connect_timeout_s, "read_timeout": cfg.read_timeout_s,
            "retries": {"max_attempts": cfg.max_attempts, "mode": "adaptive"},
            "s3": {"addressing_style": "path"},
        },
        skip_instance_cache=True,
    )


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _read_parquet(uris: list[str]) -> str:
    listed = ", ".join(_sql_str(u) for u in uris)
    return f"read_parquet([{listed}], union_by_name = true, hive_partitioning = false)"


def _empty_schema(view: str):
    from schemas.release import SELECTION_SCHEMA, SHARD_SCHEMA
    from schemas.tables import ANNOTATIONS_SCHEMA, REJECTS_SCHEMA

    schema = {"annotations": ANNOTATIONS_SCHEMA, "rejects": REJECTS_SCHEMA,
              "selection": SELECTION_SCHEMA, "shards": SHARD_SCHEMA}[view]
    if view == "shards":
        schema = schema.remove(schema.get_field_index("codes"))
    return schema


def register_views(con, src: AuditSource) -> dict[str, str]:
    """Create one view per table from exactly the listed files; returns view -> definition.
    A view with no listed file is an empty table of the published schema."""
    from model_serving.s3client import StorageError

    definitions = {}
    for view, entries in src.files.items():
        uris = [e["uri"] for e in entries]
        if not uris:
            con.register(view, _empty_schema(view).empty_table())
            definitions[view] = f"-- {src.marker} lists no {view} file: an empty table"
            continue
        source = _read_parquet(uris)
        select = "*"
        try:
            if view == "shards":  # the token codes are big and of no use to an audit
                cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()]
                if "codes" in cols:
                    select = "* EXCLUDE (codes)"
            sql = f"CREATE VIEW {view} AS SELECT {select} FROM {source}"
            con.execute(sql)
        except Exception as exc:  # noqa: BLE001 - duckdb.Error; say which files
            raise StorageError(f"cannot read the {view} files listed in {src.uri}{src.marker}: "
                               f"{error_line(exc)}") from exc
        definitions[view] = sql
    return definitions


def connect(src: AuditSource, storage):
    """A DuckDB connection with S3 reachable through s3fs and the views of `src`."""
    import duckdb

    con = duckdb.connect(config={"autoinstall_known_extensions": False,
                                 "autoload_known_extensions": False})
    con.register_filesystem(make_filesystem(storage))
    definitions = register_views(con, src)
    return con, definitions


# --- --sql ---------------------------------------------------------------------------------
def _cell(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(value, ".6g")
    text = str(value).replace("\n", "\\n")
    return text if len(text) <= MAX_CELL else text[:MAX_CELL - 1] + "…"


def format_table(columns: list[str], rows: list[tuple]) -> str:
    """An aligned text table: numbers right-aligned, NULL for nulls."""
    cells = [[_cell(v) for v in row] for row in rows]
    numeric = [all(isinstance(r[i], (int, float, Decimal)) and not isinstance(r[i], bool)
                   for r in rows if r[i] is not None) and any(r[i] is not None for r in rows)
               for i in range(len(columns))]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line(columns), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    return "\n".join(out)


def run_sql(con, query: str, limit: int | None) -> tuple[list[str], list[tuple], bool]:
    """One statement: (columns, at most `limit` rows (all if None), whether there were more)."""
    try:
        rel = con.sql(query)  # lazy: the LIMIT below is pushed into the query plan
        if rel is None:  # a statement without a result (CREATE, SET, ...)
            return [], [], False
        columns = list(rel.columns)
        rows = rel.fetchall() if limit is None else rel.limit(limit + 1).fetchall()
    except Exception as exc:  # noqa: BLE001 - every duckdb.Error is the query's
        raise AuditSQLError(error_line(exc)) from exc
    if limit is None:
        return columns, rows, False
    return columns, rows[:limit], len(rows) > limit


def split_statements(con, query: str) -> list[str]:
    """The statements of `query` (DuckDB's own parser: a ';' inside a string stays)."""
    try:
        statements = [str(st.query).strip() for st in con.extract_statements(query)]
    except Exception as exc:  # noqa: BLE001 - a parse error is the query's
        raise AuditSQLError(error_line(exc)) from exc
    statements = [st for st in statements if st.strip(" ;\n\t")]
    if not statements:
        raise AuditSQLError("--sql holds no statement")
    return statements


def _json_value(value):
    if isinstance(value, float) and value != value:
        return None  # NaN is not JSON
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)  # dates, times, UUIDs, intervals


def format_csv(columns: list[str], rows: list[tuple]) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([["" if v is None else json.dumps(_json_value(v))
                       if isinstance(v, (list, dict)) else v for v in row] for row in rows])
    return buf.getvalue().rstrip("\n")


def format_json(columns: list[str], rows: list[tuple]) -> str:
    return json.dumps([{c: _json_value(v) for c, v in zip(columns, row)} for row in rows],
                      ensure_ascii=False)


def print_sql(con, query: str, fmt: str, limit: int | None) -> None:
    """Run every statement of `query`; print each result in `fmt` (stdout), notes on stderr
    for csv/json so the output stays machine-readable."""
    import sys

    if limit is None and fmt == "table":
        limit = DEFAULT_LIMIT
    first = True
    for statement in split_statements(con, query):
        columns, rows, more = run_sql(con, statement, limit)
        if not columns:
            continue
        if fmt == "table":
            if not first:
                print()
            print(format_table(columns, rows))
            shown = f"{len(rows)} row{'s' if len(rows) != 1 else ''}"
            print(f"({shown}; more not shown, raise --limit)" if more else f"({shown})")
        else:
            if fmt == "csv" and not first:
                print()  # results of several statements: separated by an empty line
            print(format_csv(columns, rows) if fmt == "csv" else format_json(columns, rows))
            if more:
                print(f"audioverse: note: only the first {limit} rows of a result were "
                      f"printed (--limit)", file=sys.stderr)
        first = False


# --- entry point -------------------------------------------------------------------------------
def _storage_config(args):
    if args.config:
        from pipeline.config import load_config

        return load_config(args.config).storage
    from schemas.config import StorageConfig

    return StorageConfig()


def _audit(args) -> int:
    from model_serving.s3client import resolve_storage
    from operators.storage import ObjectStore

    uri = normalise_uri(args.uri)
    storage = resolve_storage(_storage_config(args))
    src = locate(ObjectStore(storage), uri)
    con, definitions = connect(src, storage)
    try:
        if args.sql is not None:
            print_sql(con, args.sql, args.format, args.limit)
            return 0
        from pipeline.audit_report import default_report_dir, write_report

        out = Path(args.out) if args.out else default_report_dir(src)
        written = write_report(con, src, out, definitions, storage=storage,
                               snippets=not args.no_clips)
        print(f"audit of {src.kind} {src.ident}: {len(written)} files in {out}/")
        print(f"  open {out / 'index.html'}")
        return 0
    finally:
        con.close()


def run_audit(args: argparse.Namespace) -> int:
    """The `audit` subcommand. User errors (AudioverseError: config, SQL, storage) reach the
    CLI, which prints them in the one style of every command (pipeline/cli.py)."""
    # The packages of the [audit] extra, before anything reaches S3: a missing one is one line
    # naming the extra (pipeline/cli.py), not a failure halfway.
    import duckdb  # noqa: F401
    import s3fs  # noqa: F401

    return _audit(args)
