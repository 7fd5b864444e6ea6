"""``index.html`` of a pipeline run: every figure and table, the notebook that made it, and provenance."""

from __future__ import annotations

import html
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from ..io import write_text
from .provenance import machine_summary

__all__ = ["write_index"]

_FIGURES = (".png", ".svg")
_TABLES = (".csv",)
_TEXT = (".md", ".txt")


def _producers(prov: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for stem, rec in prov.get("notebooks", {}).items():
        for rel in rec.get("outputs", []):
            out[rel] = stem
    return out


def _table_html(path: Path, max_rows: int = 40) -> str:
    try:
        df = pd.read_csv(path)
    except Exception as exc:  # an unreadable table is reported, not fatal for the index
        return f"<p><em>could not read: {html.escape(str(exc))}</em></p>"
    more = f"<p><em>{len(df) - max_rows} more rows in the CSV</em></p>" if len(df) > max_rows else ""
    return df.head(max_rows).to_html(index=False, border=0, classes="tbl", na_rep="") + more


_STYLE = (
    "<!doctype html><html><head><meta charset='utf-8'><title>her2lib report</title><style>"
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "img{max-width:100%;border:1px solid #ddd}.by{color:#666;font-size:90%}"
    "table.tbl,table.meta{border-collapse:collapse;font-size:85%;margin-bottom:1em}"
    "table.tbl td,table.tbl th,table.meta td,table.meta th{border:1px solid #ccc;padding:2px 6px}"
    "pre{background:#f6f6f6;padding:1em;white-space:pre-wrap}"
    "</style></head><body>"
)
_e = html.escape


def _meta_table(rows: Iterable[tuple[str, Any]]) -> str:
    return (
        "<table class='meta'>"
        + "".join(f"<tr><th>{_e(k)}</th><td>{_e(str(v))}</td></tr>" for k, v in rows)
        + "</table>"
    )


def _header(prov: dict[str, Any]) -> list[str]:
    """Title, provenance summary (commit, profile, cohort hash, dates, machine) and package versions."""
    profile, git, cohort = prov.get("profile", {}), prov.get("git", {}), prov.get("cohort") or {}
    meta = [
        ("git commit", f"{git.get('commit')}{' (dirty)' if git.get('dirty') else ''}"),
        ("profile file", f"{profile.get('file')} (sha256 {str(profile.get('sha256'))[:12]})"),
        ("cohort manifest", f"{cohort.get('manifest')} (sha256 {str(cohort.get('manifest_sha256'))[:12]})"),
        ("cohort images+masks", f"{cohort.get('n_files')} files, sha256 {str(cohort.get('files_sha256'))[:12]}"),
        ("started / finished", f"{prov.get('started_at')} / {prov.get('finished_at')}"),
        ("python / platform", f"{prov.get('python')} / {prov.get('platform')}"),
        ("machine", machine_summary(prov.get("machine"))),
    ]
    return [
        f"<h1>her2lib report — profile <code>{_e(str(profile.get('name', '?')))}</code></h1>",
        _meta_table(meta),
        "<details><summary>Package versions</summary>" + _meta_table(prov.get("packages", {}).items()) + "</details>",
    ]


def _notebook_table(nbs: dict[str, Any]) -> list[str]:
    rows = [
        "<h2>Notebooks</h2><table class='meta'><tr><th>notebook</th><th>status</th><th>wall s</th>"
        "<th>parameters</th></tr>"
    ]
    for stem, rec in sorted(nbs.items()):
        params = ", ".join(f"{k}={v}" for k, v in rec.get("parameters", {}).items() if k != "out_dir")
        rows.append(
            f"<tr><td><a href='notebooks/{_e(stem)}.ipynb'>{_e(stem)}</a></td>"
            f"<td>{_e(str(rec.get('status')))}</td><td>{rec.get('wall_s')}</td>"
            f"<td><code>{_e(params)}</code></td></tr>"
        )
    return [*rows, "</table>"]


def _outputs(out: Path, made_by: Callable[[str], str]) -> list[str]:
    """Figures (embedded, SVG twin linked), tables (rendered and linked), text results and prediction files."""
    parts = ["<h2>Figures</h2>"]
    for f in sorted((out / "figures").glob("*.png")) if (out / "figures").is_dir() else []:
        rel = f.relative_to(out).as_posix()
        svg = f.with_suffix(".svg")
        svg_link = f" (<a href='{_e(svg.relative_to(out).as_posix())}'>SVG</a>)" if svg.exists() else ""
        parts.append(
            f"<h3><a href='{_e(rel)}'>{_e(f.name)}</a>{svg_link}{made_by(rel)}</h3>"
            f"<img src='{_e(rel)}' alt='{_e(f.name)}'>"
        )
    parts.append("<h2>Tables</h2>")
    tdir = out / "tables"
    for f in sorted(tdir.glob("*")) if tdir.is_dir() else []:
        rel = f.relative_to(out).as_posix()
        if f.suffix in _TABLES:
            parts.append(f"<h3><a href='{_e(rel)}'>{_e(f.name)}</a>{made_by(rel)}</h3>{_table_html(f)}")
        elif f.suffix in _TEXT:
            parts.append(
                f"<h3><a href='{_e(rel)}'>{_e(f.name)}</a>{made_by(rel)}</h3>"
                f"<pre>{_e(f.read_text(encoding='utf-8'))}</pre>"
            )
    pdir = out / "predictions"
    preds = sorted(pdir.glob("*.csv")) if pdir.is_dir() else []
    if preds:
        items = "".join(
            f"<li><a href='{_e(p.relative_to(out).as_posix())}'>{_e(p.name)}</a>"
            f"{made_by(p.relative_to(out).as_posix())}</li>"
            for p in preds
        )
        parts.append(f"<h2>Predictions</h2><ul>{items}</ul>")
    return parts


def write_index(out: str | os.PathLike) -> Path:
    """Write ``out/index.html`` linking every figure, table and executed notebook with its provenance.

    Figures (PNG; an SVG twin is linked) are embedded, CSV tables rendered (first 40 rows) and linked,
    Markdown/text results shown verbatim. Each item names the notebook that wrote it and that notebook's
    injected parameters and wall time, read from ``provenance.json``.
    """
    out = Path(out)
    prov_path = out / "provenance.json"
    prov = json.loads(prov_path.read_text(encoding="utf-8")) if prov_path.is_file() else {}
    producers = _producers(prov)
    nbs = prov.get("notebooks", {})

    def made_by(rel: str) -> str:
        stem = producers.get(rel)
        if not stem:
            return ""
        wall = nbs.get(stem, {}).get("wall_s", "?")
        return f' <span class="by">— <a href="notebooks/{_e(stem)}.ipynb">{_e(stem)}</a>, {wall} s</span>'

    parts = [_STYLE, *_header(prov), *_notebook_table(nbs), *_outputs(out, made_by)]
    parts.append("<p>Full provenance: <a href='provenance.json'>provenance.json</a></p></body></html>")
    return write_text(out / "index.html", "\n".join(parts))
