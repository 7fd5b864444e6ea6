"""``index.html`` as a user sees it: a real smoke run's report opened in headless Chromium.

Reference: the run folder itself. Every ``<img>`` must have decoded (``naturalWidth > 0`` in Chromium), every table
must have rendered (rows, non-zero height), every CSV under ``tables/`` must appear as a rendered table, every link
and image source must name a file that exists relative to the page, every executed notebook must be linked, the
page must show the provenance recorded in ``provenance.json`` (commit, profile, cohort hash, date), and the Results
paragraph, Tables 1-3, Figure 3A/3B and Figure 4 must stand in the paper's order, before the extras.

The browser is driven through the Chrome DevTools Protocol (``websocket-client``, in the locked environment);
a full-page screenshot is saved as ``<run>/report.png``. Without Chromium the test fails in CI (``CI`` set) and is
skipped locally. Run it by hand on any run folder: ``python tests/test_report_browser.py reports/smoke``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pandas as pd
import pytest
import websocket
from PIL import Image

from her2lib.runner.report import PAPER_ITEMS, RESULTS_TEXT, write_index

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
MAX_SHOT_HEIGHT = 16000  # px; Chromium's capture limit is about 16384

# Collects from the live page: images (decoded?), tables (rendered?), figure positions, text.
_PAGE_PROBE = """
(async () => {
  const imgs = [...document.images];
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; })));
  const top = el => el.getBoundingClientRect().top + window.scrollY;
  const results = document.getElementById('results');
  return JSON.stringify({
    images: imgs.map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0})),
    tables: [...document.querySelectorAll('table')].map(t => ({
      src: t.closest('figure') ? t.closest('figure').dataset.src : null,
      rows: t.rows.length, height: t.getBoundingClientRect().height})),
    figures: [...document.querySelectorAll('figure[data-src]')].map(f => ({src: f.dataset.src, top: top(f)})),
    results_top: results ? top(results) : null,
    title: document.title,
    text: document.body.innerText,
  });
})()
"""


def find_chromium() -> str | None:
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


def require_chromium() -> str:
    """Chromium's path; a failure in CI (``CI`` set), a skip elsewhere, when it is not installed."""
    path = find_chromium()
    if path:
        return path
    reason = "headless Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)"
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(reason)
    pytest.skip(reason)


class Chromium:
    """Headless Chromium with one page, driven over the DevTools protocol."""

    def __init__(self, binary: str, *, width: int = 1280, height: int = 1600) -> None:
        self.profile = tempfile.mkdtemp(prefix="her2lib-chromium-")
        args = [binary, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--hide-scrollbars"]
        args += ["--remote-debugging-port=0", "--remote-allow-origins=*", f"--user-data-dir={self.profile}"]
        args += [f"--window-size={width},{height}", "about:blank"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.width, self._id = width, 0
        try:
            self.ws = websocket.create_connection(self._page_url(), timeout=60, suppress_origin=True)
        except BaseException:
            self.close()
            raise

    def _page_url(self, timeout: float = 30.0) -> str:
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not port_file.is_file() or not port_file.read_text().strip():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Chromium did not start its DevTools endpoint (exit code {self.proc.poll()})")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
            targets = json.load(resp)
        return next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")

    def send(self, method: str, **params):
        """Send one command and wait for its answer (events in between are dropped)."""
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def open(self, path: Path) -> None:
        """Load a file and wait for its load event."""
        self.send("Page.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride", width=self.width, height=1600, deviceScaleFactor=1, mobile=False
        )
        self.send("Page.navigate", url=path.resolve().as_uri())
        while json.loads(self.ws.recv()).get("method") != "Page.loadEventFired":
            pass

    def evaluate(self, expression: str):
        res = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"page script failed: {res['exceptionDetails']}")
        return res["result"]["value"]

    def screenshot(self, target: Path) -> Path:
        """A full-page PNG (at most ``MAX_SHOT_HEIGHT`` px tall)."""
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": self.width, "height": min(size["height"], MAX_SHOT_HEIGHT), "scale": 1}
        shot = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip)
        target.write_bytes(base64.b64decode(shot["data"]))
        return target

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Refs(HTMLParser):
    """Every ``href``/``src`` and ``id`` of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.refs.append(value)
            elif name == "id" and value:
                self.ids.add(value)


def broken_references(page: Path) -> list[str]:
    """Links and sources of ``page`` that do not resolve: a missing file, an anchor without its id, or a file
    outside the run folder (the report must travel as one folder)."""
    parser = _Refs()
    parser.feed(page.read_text(encoding="utf-8"))
    root, problems = page.parent.resolve(), []
    for ref in parser.refs:
        parts = urlsplit(ref)
        if parts.scheme in ("http", "https", "mailto"):
            continue
        if not parts.path:
            if parts.fragment not in parser.ids:
                problems.append(f"anchor {ref!r} has no element with that id")
            continue
        target = (root / unquote(parts.path)).resolve()
        if parts.scheme or not target.is_relative_to(root):
            problems.append(f"link {ref!r} points outside the run folder")
        elif not target.exists():
            problems.append(f"link {ref!r}: {target} does not exist")
    return problems


def _linked(page: Path) -> set[str]:
    parser = _Refs()
    parser.feed(page.read_text(encoding="utf-8"))
    return set(parser.refs)


def static_problems(run: Path) -> list[str]:
    """What a browser is not needed for: references resolve, every executed notebook and paper item is linked."""
    page = run / "index.html"
    problems = broken_references(page)
    linked = _linked(page)
    for nb in sorted((run / "notebooks").glob("*.ipynb")):
        if not nb.name.endswith(".failed.ipynb") and f"notebooks/{nb.name}" not in linked:
            problems.append(f"executed notebook notebooks/{nb.name} is not linked")
    for rel, label, _ in PAPER_ITEMS:
        if (run / rel).is_file() and rel not in linked:
            problems.append(f"{label} ({rel}) is not on the page")
    return problems


def _order_problems(run: Path, page: dict) -> list[str]:
    """Results, then the paper's items in its order, then the extras."""
    tops = {f["src"]: f["top"] for f in page["figures"]}
    want = [rel for rel, _, _ in PAPER_ITEMS if (run / rel).is_file()]
    problems = [f"{rel} is not shown as a captioned figure/table" for rel in want if rel not in tops]
    seq = [tops[rel] for rel in want if rel in tops]
    if (run / RESULTS_TEXT).is_file():
        if page["results_top"] is None:
            problems.append("the Results paragraph is missing")
        else:
            seq.insert(0, page["results_top"])
    extras = [t for src, t in tops.items() if src not in want]
    if seq != sorted(seq) or (extras and seq and min(extras) < seq[-1]):
        problems.append("Results, Tables 1-3, Figure 3A/3B, Figure 4 and the extras are not in that order")
    return problems


def browser_problems(run: Path, page: dict) -> list[str]:
    """What the page looked like in Chromium: images decoded, tables rendered, provenance shown, order kept."""
    problems = [f"image {i['src']!r} did not load" for i in page["images"] if not i["ok"]]
    problems += [f"table in {t['src']!r} did not render" for t in page["tables"] if t["rows"] < 2 or t["height"] <= 0]
    rendered = {t["src"] for t in page["tables"] if t["rows"] >= 2 and t["height"] > 0}
    for csv in sorted((run / "tables").glob("*.csv")):
        if f"tables/{csv.name}" not in rendered:
            problems.append(f"tables/{csv.name} is not rendered as a table")
    prov = json.loads((run / "provenance.json").read_text(encoding="utf-8"))
    expected = {
        "commit": prov["git"]["commit"],
        "profile": prov["profile"]["name"],
        "cohort hash": str(prov["cohort"]["files_sha256"])[:12],
        "date": str(prov["finished_at"] or prov["started_at"])[:10],
    }
    problems += [f"provenance {k} {v!r} is not shown" for k, v in expected.items() if not v or v not in page["text"]]
    return problems + _order_problems(run, page)


def check_report(run: Path, binary: str, *, screenshot: Path | None = None) -> tuple[list[str], dict]:
    """Open ``run/index.html`` in Chromium; return every problem found and what the page showed."""
    with Chromium(binary) as browser:
        browser.open(run / "index.html")
        page = json.loads(browser.evaluate(_PAGE_PROBE))
        if screenshot is not None:
            browser.screenshot(screenshot)
    return static_problems(run) + browser_problems(run, page), page


@pytest.mark.e2e
def test_real_smoke_report_in_chromium(smoke_run):
    """Reference: the smoke run's own folder and ``provenance.json``; the screenshot is ``<run>/report.png``."""
    binary = require_chromium()
    shot = smoke_run / "report.png"
    problems, page = check_report(smoke_run, binary, screenshot=shot)
    assert not problems, "\n".join(problems)
    assert len(page["images"]) >= 4 and page["title"].startswith("HER2 status")
    with Image.open(shot) as img:
        assert img.width == 1280 and img.height > 2000, img.size
    print(f"\nreport screenshot: {shot}")


@pytest.mark.e2e
def test_checker_flags_a_broken_copy(smoke_run, tmp_path):
    """Reference: a copy of the smoke run with a corrupt Figure 3A, a deleted notebook, an emptied Table 1 and
    the commit removed from the page; each must be reported (so the test above can fail)."""
    binary = require_chromium()
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run, ignore=shutil.ignore_patterns("models", "cache", "report.png"))
    (run / "figures" / "roc.png").write_bytes(b"not a PNG")
    (run / "notebooks" / "05_fusion.ipynb").unlink()
    commit = json.loads((run / "provenance.json").read_text())["git"]["commit"]
    html = (run / "index.html").read_text(encoding="utf-8").replace(commit, "0" * 40)
    start = html.index("<table", html.index("data-src='tables/table1_clinical.csv'"))
    html = html[:start] + "<table></table>" + html[html.index("</table>", start) + len("</table>") :]
    (run / "index.html").write_text(html, encoding="utf-8")
    problems, _ = check_report(run, binary)
    text = "\n".join(problems)
    assert "image 'figures/roc.png' did not load" in text, text
    assert "notebooks/05_fusion.ipynb" in text and "does not exist" in text, text
    assert "table in 'tables/table1_clinical.csv' did not render" in text, text
    assert "provenance commit" in text, text


def _fake_run(root: Path, figures: list[str]) -> Path:
    """A run folder with tiny PNGs, a paper table, the Results text and a notebook, as the stages write them."""
    for rel in figures:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(root / rel)
    (root / "tables").mkdir(exist_ok=True)
    pd.DataFrame(
        {"variable": ["age", "er", "er"], "level": ["", "neg", "pos"], "Variables": ["Age", "ER", "  Neg"]}
    ).to_csv(root / "tables" / "table1_clinical.csv", index=False)
    (root / RESULTS_TEXT).write_text("In the test cohort, **DL-US** achieved an AUC of 0.9 (P < 0.05).\n")
    (root / "notebooks").mkdir()
    (root / "notebooks" / "06_evaluation.ipynb").write_text("{}")
    prov = {"profile": {"name": "fake"}, "status": "ok", "notebooks": {"06_evaluation": {"outputs": figures}}}
    (root / "provenance.json").write_text(json.dumps(prov))
    return root


def test_index_leaves_out_what_a_run_did_not_write(tmp_path):
    """Reference: a hand-made run folder with Figure 3A but no Figure 3B/4 (a skipped modality): no image points
    at a missing file, Results come first, the paper's items before the extras, each under its caption."""
    run = _fake_run(tmp_path, ["figures/roc.png", "figures/calibration.png", "figures/zz_other.png"])
    text = write_index(run).read_text(encoding="utf-8")
    assert not static_problems(run), static_problems(run)
    assert "gradcam" not in text and "performance.png" not in text
    order = [
        text.index(s) for s in ("id='results'", "<b>Table 1.</b>", "<b>Figure 3A.</b>", "Calibration on", "zz_other")
    ]
    assert order == sorted(order), order
    assert "<strong>DL-US</strong>" in text and "P &lt; 0.05" in text
    assert "<td class='lvl'>Neg</td>" in text and "<th>variable</th>" not in text
    (run / "figures" / "roc.png").unlink()
    assert any("figures/roc.png" in p for p in static_problems(run)), "a stale page must be caught"


if __name__ == "__main__":
    run_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "reports/smoke").resolve()
    chromium = find_chromium() or sys.exit("chromium not found; apt-get install chromium")
    found, _ = check_report(run_dir, chromium, screenshot=run_dir / "report.png")
    print("\n".join(found) or f"index.html OK in Chromium; screenshot {run_dir / 'report.png'}")
    sys.exit(1 if found else 0)
