"""`make check-report`: open the audit reports in a real headless browser and check what it shows.

    .venv/bin/python -m bench.report_browser                 # a throwaway S3 with the test data
    .venv/bin/python -m bench.report_browser --keep DIR      # keep the reports (and screenshots)

Builds the report of a small stored run and of a release (the data of tests/test_audit.py: a run
r1 with a previous night rp, a release x1, and one real WAV source so clips can be read) on a
throwaway local SeaweedFS server, then opens each index.html in Debian's chromium
(`--headless --no-sandbox --dump-dom`, and `--screenshot`). It asserts on the DOM the browser
built (not on the file): every section and figure is there, every <img> file exists and is not
empty, every <audio> has a data URI that decodes as 16 kHz mono 16-bit WAV of at most 4 s, the
browser kept as many rows, images, clips and SQL blocks as the file has (no markup swallowed),
no template placeholder, `None` or `nan` leaked, and the page size is bounded. Chromium is
installed with apt-get when missing (root, no sudo). Not part of `make test`.
"""
from __future__ import annotations

import argparse
import base64
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_PAGE_BYTES = 8 * 1024 * 1024      # index.html (the clips are capped at 6 MiB of data URIs)
MAX_FOLDER_BYTES = 10 * 1024 * 1024   # index.html and its PNGs
BROWSER_TIMEOUT_S = 90
BUCKET = "audioverse-test"
SECTIONS = ["summary", "previous", "figures", "examples", "rerun"]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def ensure_chromium() -> str:
    path = find_chromium()
    if path:
        return path
    if os.geteuid() != 0:
        sys.exit("check-report: chromium is not installed and this is not root: "
                 "apt-get install -y chromium")
    print("installing chromium (apt-get) ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
    if subprocess.run(cmd, env=env).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True)
        subprocess.run(cmd, env=env, check=True)
    path = find_chromium()
    if not path:
        sys.exit("check-report: chromium still not found after apt-get install")
    return path


def browser(chromium: str, args: list[str], url: str) -> str:
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        proc = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--mute-audio", f"--user-data-dir={profile}", *args, url],
            capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if proc.returncode != 0:
        raise AssertionError(f"chromium exited {proc.returncode}: {proc.stderr[-1500:]}")
    return proc.stdout


class DomIndex(HTMLParser):
    """The elements the checks need, from the DOM the browser dumped."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.imgs: list[str] = []
        self.audio: list[str] = []
        self.counts = {"tr": 0, "img": 0, "audio": 0, "details": 0, "figure": 0, "section": 0}
        self.text: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag in self.counts:
            self.counts[tag] += 1
        if tag == "img":
            self.imgs.append(a.get("src") or "")
        if tag == "audio":
            self.audio.append(a.get("src") or "")
        if tag in ("style", "script"):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag in ("style", "script"):
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.text.append(data)


def _source_counts(page: str) -> dict[str, int]:
    return {tag: len(re.findall(rf"<{tag}[\s>]", page))
            for tag in ("tr", "img", "audio", "details", "figure", "section")}


def check_wav(uri: str) -> float:
    prefix = "data:audio/wav;base64,"
    assert uri.startswith(prefix), f"<audio> src is not a WAV data URI: {uri[:40]}"
    with wave.open(io.BytesIO(base64.b64decode(uri[len(prefix):], validate=True))) as w:
        params = (w.getframerate(), w.getnchannels(), w.getsampwidth())
        frames = w.getnframes()
        data = w.readframes(frames)
    assert params == (16000, 1, 2), f"clip is {params}, not 16 kHz mono 16-bit"
    assert 0 < frames <= 4 * 16000 and len(data) == 2 * frames, f"clip of {frames} frames"
    return frames / 16000


def check_png(path: Path) -> None:
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    ok = img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300
    assert ok and img[..., :3].std() > 0.01, f"{path.name} is blank or tiny"


def check_report(chromium: str, folder: Path, kind: str, want_clips: bool) -> dict:
    index = folder / "index.html"
    page = index.read_text(encoding="utf-8")
    size = index.stat().st_size
    folder_size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    assert size <= MAX_PAGE_BYTES, f"index.html is {size} bytes (> {MAX_PAGE_BYTES})"
    assert folder_size <= MAX_FOLDER_BYTES, f"the report is {folder_size} bytes"

    t0 = time.monotonic()
    dom_text = browser(chromium, ["--dump-dom"], index.as_uri())
    dom = DomIndex()
    dom.feed(dom_text)
    shot = folder / "screenshot.png"
    browser(chromium, [f"--screenshot={shot}", "--window-size=1200,2400",
                       "--hide-scrollbars"], index.as_uri())
    browser_s = time.monotonic() - t0

    wanted = SECTIONS + (["captions"] if kind == "run" else [])
    missing = [s for s in wanted if s not in dom.ids]
    assert not missing, f"sections missing from the DOM: {missing}"
    figures = re.findall(r'<figure id="(\w+)">', page)
    assert figures and not [f for f in figures if f not in dom.ids], "figures missing"
    examples = re.findall(r'<div class="example-section" id="(\w+)">', page)
    assert len(examples) >= 3 and not [e for e in examples if e not in dom.ids]
    source = _source_counts(page)
    assert dom.counts == source, f"the browser's DOM {dom.counts} != the file {source}"
    for src in dom.imgs:
        path = folder / src
        assert path.is_file() and path.stat().st_size > 0, f"<img src={src!r}>: no file"
        check_png(path)
    clip_s = [check_wav(uri) for uri in dom.audio]
    if want_clips:
        assert clip_s, "no <audio> clip in the page"
    text = " ".join(dom.text)
    for leak, flags in ((r"\bNone\b", 0), (r"\bnan\b", re.I), (r"\{\{|\{%|%\}|\}\}", 0),
                        (r"\bUndefined\b", 0)):
        found = re.search(leak, text, flags)
        assert not found, f"{found.group(0)!r} leaked into the page: " \
                          f"...{text[max(0, found.start() - 60): found.end() + 60]}..."
    assert shot.is_file() and shot.stat().st_size > 10_000, "the screenshot is empty"
    check_png(shot)
    return {"kind": kind, "folder": str(folder), "page_kb": round(size / 1024),
            "folder_kb": round(folder_size / 1024), "sections": len(wanted),
            "figures": len(figures), "example_sections": len(examples),
            "imgs": len(dom.imgs), "clips": len(clip_s), "clip_s": round(sum(clip_s), 2),
            "rows": dom.counts["tr"], "browser_s": round(browser_s, 1)}


def stage_test_data(s3_client) -> tuple[str, str]:
    """The run r1 (with the previous night rp) and release x1 of tests/test_audit.py."""
    from tests import test_audit as t

    t.write_test_data(s3_client)
    return t.RUN_URI, t.RELEASE_URI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="check-report", description=__doc__.split("\n")[0])
    parser.add_argument("--keep", default=None, metavar="DIR",
                        help="write the reports here and keep them (default: a temporary dir)")
    args = parser.parse_args(argv)
    t_start = time.monotonic()
    chromium = ensure_chromium()
    version = subprocess.run([chromium, "--version"], capture_output=True, text=True).stdout
    t_installed = time.monotonic()

    from infra import local_s3

    work = Path(args.keep or tempfile.mkdtemp(prefix="check-report-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="check-report-s3-"))
    server = local_s3.start(data_dir, bucket=BUCKET)
    failures, results = [], []
    try:
        os.environ.update(server.env())
        from model_serving.s3client import make_s3_client
        from pipeline.cli import main as audioverse
        from schemas.config import StorageConfig

        run_uri, release_uri = stage_test_data(make_s3_client(StorageConfig()))
        for kind, uri in (("run", run_uri), ("release", release_uri)):
            out = work / f"audit-{kind}"
            t0 = time.monotonic()
            code = audioverse(["audit", uri, "--out", str(out)])
            if code != 0:
                failures.append(f"{kind}: audioverse audit exited {code}")
                continue
            report_s = time.monotonic() - t0
            try:
                result = check_report(chromium, out, kind, want_clips=kind == "run")
                result["report_s"] = round(report_s, 1)
                results.append(result)
            except AssertionError as exc:
                failures.append(f"{kind}: {exc}")
    finally:
        local_s3.stop(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\ncheck-report: {version.strip()} (ready in {t_installed - t_start:.0f} s)")
    cols = ["kind", "page_kb", "folder_kb", "sections", "figures", "example_sections", "imgs",
            "clips", "clip_s", "rows", "report_s", "browser_s"]
    print("  ".join(f"{c:>9}" for c in cols))
    for r in results:
        print("  ".join(f"{str(r.get(c, '')):>9}" for c in cols))
    if args.keep:
        print(f"reports and screenshots kept under {work}/")
    for f in failures:
        print(f"FAIL {f}")
    print(f"{'FAILED' if failures else 'OK'} in {time.monotonic() - t_start:.0f} s "
          f"(wall, including the browser install)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
