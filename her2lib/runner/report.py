"""``index.html`` of a pipeline run: the results first, the paper's tables and figures with captions, then the extras.

The page is read by clinicians: a title with the question, the run's provenance in one box, the Results paragraph
(``tables/results_text.md``), Tables 1-3, Figure 3A/3B and Figure 4 in the paper's order, each with a caption, then
every other figure and table of the run, the prediction files, the executed notebooks and the package versions.
A figure or table that a run did not write (a skipped modality) is left out; nothing points at a missing file.
"""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from ..io import write_text
from .provenance import machine_summary

__all__ = ["PAPER_ITEMS", "write_index", "markdown_html"]

_e = html.escape
RESULTS_TEXT = "tables/results_text.md"
REPEATS_TEXT = "tables/repeats_text.md"
EXTERNAL_TEXT = "tables/external/results_text.md"
RADIOMICS_TEXT = "tables/radiomics_text.md"
CLINICAL_TEXT = "tables/clinical_text.md"

# The paper's tables and figures, in its order: (file relative to the run folder, label, caption).
PAPER_ITEMS: tuple[tuple[str, str, str], ...] = (
    (
        "tables/table1_clinical.csv",
        "Table 1",
        "Clinical and pathological findings, training vs test cohort. The P value stands on the first row of each "
        "variable, with the test that produced it and its Bonferroni-adjusted value.",
    ),
    ("tables/table2_us.csv", "Table 2", "Ultrasound findings, training vs test cohort."),
    ("tables/table3_mri.csv", "Table 3", "MRI findings, training vs test cohort."),
    (
        "figures/roc.png",
        "Figure 3A",
        "ROC curves of DL-US, DL-MRI and DL-US&MRI on the test cohort. Legend: AUC (95% CI). Dots: each model's "
        "operating point at its threshold (Youden's J on the training cohort's out-of-fold predictions).",
    ),
    (
        "figures/performance.png",
        "Figure 3B",
        "Diagnostic performance on the test cohort: AUC, accuracy, sensitivity, specificity, PPV, NPV and F1 of "
        "each model, with 95% confidence intervals.",
    ),
    (
        "figures/gradcam_us.png",
        "Figure 4 · DL-US",
        "Where DL-US looks: ultrasound images of test patients with the lesion outline and the ROI the model saw "
        "(top), and the Grad-CAM map for HER2-positive (bottom; 1 = strongest evidence in this image).",
    ),
    (
        "figures/gradcam_mri.png",
        "Figure 4 · DL-MRI",
        "Where DL-MRI looks: the axial MRI slice with the largest lesion area, with the lesion outline and ROI, the "
        "same slice with the Grad-CAM map, and a coronal reformat through the lesion.",
    ),
)

# Captions of the extras; files not named here are listed with their file name only.
EXTRA_CAPTIONS: dict[str, str] = {
    "figures/radiomics.png": "What radiomics adds: ROC curves of the radiomics model, DL-US&MRI and "
    "DL-US&MRI+Radiomics (test cohort; external cohort beside it when there is one), with DeLong 95% CIs, the "
    "paired DeLong P against DL-US&MRI and the NRI and IDI of adding radiomics; right: the radiomic features the "
    "LASSO kept, by the number of training folds that kept them.",
    "tables/radiomics_auc.csv": "Radiomics, DL-US&MRI and DL-US&MRI+Radiomics: AUC with its DeLong 95% CI per "
    "evaluation cohort.",
    "tables/radiomics_delong.csv": "Paired DeLong test of the radiomics model and of DL-US&MRI+Radiomics against "
    "DL-US&MRI: AUC difference, 95% CI, Z and two-sided P.",
    "tables/radiomics_reclassification.csv": "Reclassification by adding radiomics to DL-US&MRI: category-free NRI "
    "(events, non-events, overall) and IDI with Wald 95% CIs and P values (as R's Hmisc::improveProb).",
    "tables/radiomics_features_selected.csv": "Radiomic features with a non-zero LASSO coefficient in at least one "
    "training fold: number of folds, mean coefficient (per SD of the feature).",
    "tables/radiomics_folds.csv": "The radiomics model in each training fold: patients, candidate features after "
    "the filters, features selected, penalty chosen by the inner cross-validation, inner-CV AUC (optimistic: the "
    "filters saw all of the fold's training patients) and the AUC on the held-out fold.",
    "figures/nomogram.png": "Nomogram of DL-US&MRI+Clinical: points of each term's value, total points and the "
    "probability of HER2-positive (model fitted on the training cohort's OOF scores).",
    "figures/clinical.png": "What the BI-RADS reading adds: ROC curves of DL-US&MRI and DL-US&MRI+Clinical with "
    "DeLong 95% CIs, the paired DeLong P and the NRI and IDI.",
    "tables/clinical_screen.csv": "Univariable likelihood-ratio screen of the BI-RADS descriptors, age and size "
    "on the training cohort (levels pooled as the model encodes them).",
    "tables/clinical_coefficients.csv": "DL-US&MRI+Clinical: coefficients and odds ratios with Wald 95% CIs "
    "(fitted on the training OOF scores).",
    "tables/clinical_auc.csv": "DL-US&MRI and DL-US&MRI+Clinical: AUC with its DeLong 95% CI per evaluation cohort.",
    "tables/clinical_delong.csv": "Paired DeLong test of DL-US&MRI+Clinical against DL-US&MRI.",
    "tables/clinical_reclassification.csv": "Reclassification by adding the BI-RADS descriptors, age and size to "
    "DL-US&MRI: category-free NRI (events, non-events, overall) and IDI with Wald 95% CIs.",
    "tables/fusion_radiomics_coefficients.csv": "DL-US&MRI+Radiomics: logistic-regression coefficients of the "
    "DL-US&MRI and radiomics logits, fitted on the training OOF scores (Wald 95% CIs).",
    "figures/calibration.png": "Calibration on the test cohort: observed HER2-positive fraction against the "
    "predicted probability (on the diagonal = well calibrated), with the number of patients per probability.",
    "figures/decision_curve.png": "Decision curve: net benefit of acting on each model at each threshold "
    "probability, against treating every patient as HER2-positive or none.",
    "figures/roc_classes.png": "One-vs-rest ROC curves on the test cohort, one panel per HER2 class (zero, low, "
    "positive). Legend: AUC (95% DeLong CI). Dots: each model's operating point at its decision rule (chosen on "
    "the training cohort's out-of-fold predictions).",
    "figures/confusion_matrices.png": "Confusion matrices of each model on the test cohort at its decision rule "
    "(chosen on the training cohort's out-of-fold predictions): counts (mean over the fold models) and row "
    "percentages.",
    "figures/roc_low_vs_zero.png": "HER2-low vs HER2-zero among the HER2-negative test patients (the question of "
    "trastuzumab deruxtecan eligibility): ROC curves with AUC (95% DeLong CI).",
    "figures/internal_vs_external.png": "Internal vs external validation: each model's ROC curve in the test cohort "
    "(solid) and in the external validation cohort (dashed), with the unpaired DeLong P of the two AUCs.",
    "figures/external/roc.png": "ROC curves in the external validation cohort (models, thresholds and fusion fitted "
    "on the training cohort only).",
    "figures/external/performance.png": "Diagnostic performance in the external validation cohort at the "
    "training-OOF thresholds.",
    "figures/external/calibration.png": "Calibration in the external validation cohort (no recalibration).",
    "figures/external/decision_curve.png": "Decision curve in the external validation cohort.",
    "figures/repeats.png": "Repeated cross-validation: each model's test AUC and each paired DeLong AUC difference in "
    "every repetition (new folds and training seed, the same test cohort), their mean and 2.5th-97.5th percentiles; "
    "the diamond is repetition 0, the single run reported above.",
    "figures/learning_curve_us.png": "Learning curves of DL-US per fold: training and selection-set loss, and the "
    "selection-set AUC with the chosen epoch.",
    "figures/learning_curve_mri.png": "Learning curves of DL-MRI per fold: training and selection-set loss, and "
    "the selection-set AUC with the chosen epoch.",
    "figures/roi_examples.png": "Regions of interest: the source image with the lesion outline and crop box "
    "(left) and the model input (right).",
    "figures/cohort_gallery.png": "Cohort gallery: ultrasound (top) and MRI (bottom) of randomly drawn "
    "HER2-negative (cyan) and HER2-positive (red) patients.",
    "tables/performance.csv": "Figure 3B in numbers: every metric with its confidence interval, the threshold and "
    "how it was chosen.",
    "tables/delong.csv": "DeLong comparisons of the models' AUCs: difference, 95% CI, Z and two-sided P.",
    "tables/internal_vs_external.csv": "Each model's test-cohort AUC against its external-cohort AUC: unpaired "
    "DeLong test (pROC roc.test, paired = FALSE).",
    "tables/external/performance.csv": "Every metric in the external validation cohort with its confidence interval "
    "(thresholds from the training OOF predictions).",
    "tables/external/delong.csv": "Paired DeLong comparisons of the models within the external validation cohort.",
    "tables/external/calibration.csv": "Calibration in the external validation cohort: intercept, slope, Brier "
    "score and the reliability-curve points.",
    "tables/repeats_summary.csv": "Repeated cross-validation: test and OOF AUC of each model and the DeLong AUC "
    "differences, summarised over the repetitions (mean, SD, percentiles) beside the single run.",
    "tables/repeats_auc.csv": "Repeated cross-validation: test and OOF AUC of each model in each repetition.",
    "tables/repeats_delong.csv": "Repeated cross-validation: paired DeLong test of each pair in each repetition.",
    "tables/performance_fold_models.csv": "AUC, sensitivity and specificity of each fold model on the test cohort.",
    "tables/calibration.csv": "Calibration per model and probability bin (the points of the calibration figure), "
    "with calibration-in-the-large, calibration slope and Brier score.",
    "tables/decision_curve.csv": "Net benefit per model and threshold probability (the decision curve).",
    "tables/class_auc.csv": "One-vs-rest AUC of each HER2 class with its DeLong 95% CI, and the macro-average AUC "
    "with a stratified bootstrap CI, per model (test cohort).",
    "tables/class_metrics.csv": "Sensitivity, specificity, PPV and NPV of each HER2 class (one against the rest) "
    "with exact 95% CIs at the decision rule chosen on the training out-of-fold predictions, with accuracy and "
    "balanced accuracy.",
    "tables/decision_rules.csv": "Decision rule of each model: class weights chosen to maximise the balanced "
    "accuracy on the training cohort's out-of-fold predictions, and how the rule was applied to the test cohort.",
    "tables/confusion.csv": "Confusion matrices in long format: true by predicted class, counts averaged over the "
    "fold models, with the share of the true class.",
    "tables/low_vs_zero_auc.csv": "HER2-low vs HER2-zero AUC (95% DeLong CI) among the HER2-negative test "
    "patients, per model, with the score used.",
    "tables/class_delong.csv": "Paired DeLong comparisons of the models' one-vs-rest AUCs per class and of their "
    "HER2-low vs HER2-zero AUCs: difference, 95% CI, Z and two-sided P.",
    "tables/fusion_protocols.csv": "The fusion model DL-US&MRI fitted leakage-free (training cohort) and as the "
    "paper did (in the test cohort), with the difference in test AUC.",
    "tables/fusion_coefficients.csv": "Coefficients of the fusion model (logistic regression on the DL-US and "
    "DL-MRI predictions).",
    "tables/dl_us_folds.csv": "DL-US per fold: chosen epoch and performance on the selection set and held-out fold.",
    "tables/dl_mri_folds.csv": "DL-MRI per fold: chosen epoch and performance on the selection set and held-out fold.",
    "tables/gradcam_energy_summary.csv": "Does each Grad-CAM map find its own lesion? Share of the map's energy in "
    "the patient's own lesion against other patients' lesions (the centre prior), per model.",
    "tables/table1_clinical_by_her2.csv": "Clinical and pathological findings, HER2-positive vs HER2-negative "
    "(descriptive).",
    "tables/table2_us_by_her2.csv": "Ultrasound findings, HER2-positive vs HER2-negative (descriptive).",
    "tables/table3_mri_by_her2.csv": "MRI findings, HER2-positive vs HER2-negative (descriptive).",
    "tables/pvalues_vs_paper.csv": "Our P values of Tables 1-3 beside the paper's.",
    "tables/tests.csv": "Every test of Tables 1-3: statistic, exact P value, Bonferroni-adjusted P value and why the "
    "test was chosen.",
    "tables/cohort_split_counts.csv": "Patients per split and HER2 status.",
    "tables/cohort_counts_vs_paper.csv": "Categorical counts of this cohort against the paper's Tables 1-3.",
}
_FIGURE_ORDER = tuple(k for k in EXTRA_CAPTIONS if k.startswith("figures/"))
_TABLE_ORDER = tuple(k for k in EXTRA_CAPTIONS if k.startswith("tables/"))

_STYLE = """
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:0 auto;
 padding:1.5em 2em 4em;color:#1d2530;background:#fff}
h1{font-size:1.9em;line-height:1.25;margin:.4em 0 .1em}h2{margin-top:2.2em;border-bottom:2px solid #e3e8ee;
 padding-bottom:.2em}.sub{color:#55606e;margin:0 0 1em;font-size:1.05em}
.prov{display:grid;grid-template-columns:max-content 1fr;gap:.15em 1em;background:#f4f7fa;border:1px solid #dde4eb;
 border-radius:6px;padding:.7em 1em;font-size:.88em}.prov dt{font-weight:600;color:#3b4754}.prov dd{margin:0;
 overflow-wrap:anywhere}.warn{background:#fff4e5;border:1px solid #f0b46a;border-radius:6px;padding:.6em 1em}
.results{background:#fbfcfd;border-left:4px solid #3c78b4;padding:.2em 1.2em;margin:1em 0}
figure{margin:2em 0;padding:0}figure img{max-width:100%;max-height:760px;border:1px solid #e3e8ee;display:block;margin:0 auto}
figcaption{font-size:.92em;color:#333d48;margin:.5em 0}figcaption b{color:#1d2530}.src{color:#6b7683;font-size:.85em}
.scroll{overflow-x:auto}.scroll table{width:max-content}table{border-collapse:collapse;font-size:.82em;margin:.3em 0}
td,th{border:1px solid #d5dce3;padding:3px 7px;text-align:left;vertical-align:top;max-width:26em}th{background:#eef2f6}
td.lvl{padding-left:1.6em}table.tbl td{white-space:nowrap;overflow:hidden;text-overflow:ellipsis}code{font-size:.9em}a{color:#1f5f9e}
nav{font-size:.9em;margin:1em 0}nav a{margin-right:1em}details{margin:1em 0}
"""


def markdown_html(text: str) -> str:
    """The little Markdown of ``results_text.md`` as HTML: paragraphs, ``#`` headings, ``-`` lists, ``**bold**``,
    ``*italic*`` and ```code```; everything else is escaped.

    Examples
    --------
    >>> markdown_html("# Results\\n\\nAUC **0.91** (P < 0.05)\\n\\n- one\\n- `two`")
    '<h3>Results</h3>\\n<p>AUC <strong>0.91</strong> (P &lt; 0.05)</p>\\n<ul><li>one</li><li><code>two</code></li></ul>'
    """
    blocks = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        if not lines:
            continue
        if len(lines) == 1 and lines[0].startswith("#"):
            blocks.append(f"<h3>{_inline(lines[0].lstrip('#').strip())}</h3>")
        elif all(line[:2] in ("- ", "* ") for line in lines):
            blocks.append("<ul>" + "".join(f"<li>{_inline(line[2:])}</li>" for line in lines) + "</ul>")
        else:
            blocks.append(f"<p>{_inline(' '.join(lines))}</p>")
    return "\n".join(blocks)


def _inline(text: str) -> str:
    text = _e(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", text)


def _producers(prov: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for stem, rec in prov.get("notebooks", {}).items():
        for rel in rec.get("outputs", []):
            out[rel] = stem
    return out


def _cell(value: Any) -> str:
    """One table cell: numbers to 4 significant digits, leading spaces (a level under its variable) as indent, long
    text also as a tooltip (a data table shows one line per row)."""
    if isinstance(value, float):
        return "<td></td>" if pd.isna(value) else f"<td>{value:.4g}</td>"
    text = "" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)
    indent = len(text) - len(text.lstrip(" "))
    if indent and text.strip():
        return f"<td class='lvl'>{_e(text.strip())}</td>"
    return f"<td title='{_e(text)}'>{_e(text)}</td>" if len(text) > 40 else f"<td>{_e(text)}</td>"


def _table_html(path: Path, *, paper: bool = False, max_rows: int = 25) -> str:
    """A CSV as an HTML table (first ``max_rows`` rows); numbers to 4 significant digits, except in the paper's
    tables, which are shown whole and as written, without the machine columns ``variable``/``level``."""
    try:
        df = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype=str if paper else None)
    except Exception as exc:  # an unreadable table is reported, not fatal for the index
        return f"<p><em>could not read {_e(path.name)}: {_e(str(exc))}</em></p>"
    if paper and "Variables" in df.columns:
        df = df.drop(columns=[c for c in ("variable", "level") if c in df.columns])
    head = "".join(f"<th>{_e(str(c))}</th>" for c in df.columns)
    max_rows = len(df) if paper else max_rows
    rows = "".join("<tr>" + "".join(map(_cell, row)) + "</tr>" for row in df.head(max_rows).itertuples(index=False))
    more = f"<p class='src'>{len(df) - max_rows} more rows in the CSV</p>" if len(df) > max_rows else ""
    return f"<div class='scroll'><table class='{'paper' if paper else 'tbl'}'><tr>{head}</tr>{rows}</table></div>{more}"


def _item(out: Path, rel: str, caption: str, source: Callable[[str], str], *, paper: bool = False) -> str:
    """One figure or table: the image or rendered CSV under a caption naming the file and its notebook."""
    path = out / rel
    svg = path.with_suffix(".svg")
    svg_link = f" · <a href='{_e(svg.relative_to(out).as_posix())}'>SVG</a>" if svg.is_file() else ""
    links = f"<span class='src'><a href='{_e(rel)}'>{_e(path.name)}</a>{svg_link}{source(rel)}</span>"
    cap = f"<figcaption>{caption} {links}</figcaption>"
    if path.suffix == ".png":
        return f"<figure data-src='{_e(rel)}'>{cap}<img src='{_e(rel)}' alt='{_e(path.name)}'></figure>"
    if path.suffix == ".csv":
        return f"<figure data-src='{_e(rel)}'>{cap}{_table_html(path, paper=paper)}</figure>"
    return f"<figure data-src='{_e(rel)}'>{cap}<pre>{_e(path.read_text(encoding='utf-8'))}</pre></figure>"


def _provenance_box(prov: dict[str, Any]) -> list[str]:
    """Commit, profile, cohort hash, dates and machine in one box near the top."""
    profile, git, cohort = prov.get("profile", {}), prov.get("git", {}), prov.get("cohort") or {}
    rows = [
        ("Profile", f"{profile.get('name', '?')} ({profile.get('file')}, sha256 {str(profile.get('sha256'))[:12]})"),
        ("Git commit", f"{git.get('commit')}{' (uncommitted changes)' if git.get('dirty') else ''}"),
        (
            "Cohort",
            f"{cohort.get('n_patients')} patients, {cohort.get('n_files')} image/mask files, "
            f"sha256 {str(cohort.get('files_sha256'))[:12]}; manifest {cohort.get('manifest')} "
            f"(sha256 {str(cohort.get('manifest_sha256'))[:12]})",
        ),
        ("Run", f"started {prov.get('started_at')}, finished {prov.get('finished_at')}, status {prov.get('status')}"),
        ("Machine", f"{machine_summary(prov.get('machine'))}; Python {prov.get('python')}, {prov.get('platform')}"),
    ]
    box = "".join(f"<dt>{_e(k)}</dt><dd>{_e(str(v))}</dd>" for k, v in rows)
    parts = [f"<dl class='prov' id='provenance'>{box}</dl>"]
    if prov.get("status") != "ok":
        parts.append(
            f"<p class='warn'>This run's status is <b>{_e(str(prov.get('status')))}</b>: some results may be "
            "missing or from an earlier batch. See the notebooks below.</p>"
        )
    return parts


def _header(prov: dict[str, Any], out: Path) -> list[str]:
    """Title (the paper's question and the profile), provenance, and the Results paragraphs."""
    name = str(prov.get("profile", {}).get("name", "?"))
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>HER2 status from ultrasound and MRI — her2lib report ({_e(name)})</title>"
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Can deep learning on breast ultrasound and MRI predict HER2 status?</h1>",
        "<p class='sub'>A reproduction of Fan et al. 2025 (DL-US, DL-MRI and their fusion DL-US&amp;MRI) with "
        f"her2lib · profile <b>{_e(name)}</b></p>",
        *_provenance_box(prov),
        "<nav><a href='#results'>Results</a><a href='#paper'>Tables and figures</a><a href='#extras'>More</a>"
        "<a href='#notebooks'>Notebooks</a></nav>",
    ]
    results = out / RESULTS_TEXT
    if results.is_file():
        repeats = out / REPEATS_TEXT  # a repeated cross-validation's paragraph, when the run has one
        text = results.read_text(encoding="utf-8")
        text += ("\n\n" + repeats.read_text(encoding="utf-8")) if repeats.is_file() else ""
        parts.append(f"<h2 id='results'>Results</h2><div class='results'>{markdown_html(text)}</div>")
        external = out / EXTERNAL_TEXT  # an external validation cohort's paragraphs, when the cohort has one
        if external.is_file():
            parts.append(
                "<h3>External validation</h3><div class='results'>"
                f"{markdown_html(external.read_text(encoding='utf-8'))}</div>"
            )
        for rel, title in ((RADIOMICS_TEXT, "Radiomics"), (CLINICAL_TEXT, "BI-RADS descriptors, age and size")):
            added = out / rel  # an added-value comparison, when notebook 05 ran it
            if added.is_file():
                parts.append(
                    f"<h3>{_e(title)}</h3><div class='results'>{markdown_html(added.read_text(encoding='utf-8'))}</div>"
                )
    return parts


def _meta_table(rows: Iterable[tuple[str, Any]]) -> str:
    return "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(str(v))}</td></tr>" for k, v in rows) + "</table>"


def _notebook_table(out: Path, prov: dict[str, Any]) -> list[str]:
    """Every notebook of the run: link to the executed copy (when it exists), status, wall time, parameters."""
    rows = ["<tr><th>notebook</th><th>status</th><th>wall s</th><th>parameters</th></tr>"]
    for stem, rec in sorted(prov.get("notebooks", {}).items()):
        params = ", ".join(f"{k}={v}" for k, v in rec.get("parameters", {}).items() if k != "out_dir")
        link = f"notebooks/{stem}.ipynb"
        name = f"<a href='{_e(link)}'>{_e(stem)}</a>" if (out / link).is_file() else _e(stem)
        rows.append(
            f"<tr><td>{name}</td><td>{_e(str(rec.get('status')))}</td><td>{_e(str(rec.get('wall_s')))}</td>"
            f"<td><code>{_e(params)}</code></td></tr>"
        )
    return [
        "<h2 id='notebooks'>Executed notebooks</h2><p>Each notebook as it ran, with its outputs and the "
        "parameters the runner injected.</p>",
        f"<div class='scroll'><table>{''.join(rows)}</table></div>",
        "<details><summary>Package versions</summary>" + _meta_table(prov.get("packages", {}).items()) + "</details>",
        "<p>Full provenance: <a href='provenance.json'>provenance.json</a></p>",
    ]


def _listed(out: Path, sub: str, suffixes: tuple[str, ...]) -> list[str]:
    folder = out / sub
    files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix in suffixes) if folder.is_dir() else []
    return [f.relative_to(out).as_posix() for f in files]


def _paper(out: Path, source: Callable[[str], str]) -> list[str]:
    """Tables 1-3, Figure 3A/3B and Figure 4, those the run wrote, each under its caption."""
    parts = ["<h2 id='paper'>The paper's tables and figures</h2>"]
    for rel, label, caption in PAPER_ITEMS:
        if (out / rel).is_file():
            parts.append(_item(out, rel, f"<b>{_e(label)}.</b> {_e(caption)}", source, paper=True))
    return parts


def _extras(out: Path, source: Callable[[str], str]) -> list[str]:
    """Every other figure and table of the run (captioned ones first), then the prediction files."""
    shown = {rel for rel, _, _ in PAPER_ITEMS} | {
        RESULTS_TEXT,
        REPEATS_TEXT,
        EXTERNAL_TEXT,
        RADIOMICS_TEXT,
        CLINICAL_TEXT,
    }
    figures = _listed(out, "figures", (".png",)) + _listed(out, "figures/external", (".png",))
    tables = _listed(out, "tables", (".csv", ".md", ".txt")) + _listed(out, "tables/external", (".csv",))
    ordered = [r for r in _FIGURE_ORDER if r in figures] + [r for r in figures if r not in _FIGURE_ORDER]
    ordered += [r for r in _TABLE_ORDER if r in tables] + [r for r in tables if r not in _TABLE_ORDER]
    parts = ["<h2 id='extras'>More figures and tables</h2>"]
    for rel in (r for r in ordered if r not in shown):
        caption = EXTRA_CAPTIONS.get(rel)
        caption_html = _e(caption) if caption else ""
        parts.append(_item(out, rel, caption_html, source, paper=rel.startswith("tables/table")))
    preds = _listed(out, "predictions", (".csv",))
    if preds:
        items = "".join(f"<li><a href='{_e(p)}'>{_e(Path(p).name)}</a>{source(p)}</li>" for p in preds)
        parts.append(f"<h2 id='predictions'>Prediction files</h2><ul>{items}</ul>")
    return parts


def write_index(out: str | os.PathLike) -> Path:
    """Write ``out/index.html``: results, the paper's tables and figures with captions, extras, notebooks.

    Figures (PNG; an SVG twin is linked) are embedded, CSV tables rendered (Tables 1-3 whole, others' first 25
    rows) and linked, the Results text rendered from its Markdown. Each item names the notebook that wrote it and that notebook's wall
    time, read from ``provenance.json``; files a run did not write are left out.
    """
    out = Path(out)
    prov_path = out / "provenance.json"
    prov = json.loads(prov_path.read_text(encoding="utf-8")) if prov_path.is_file() else {}
    producers = _producers(prov)
    nbs = prov.get("notebooks", {})

    def source(rel: str) -> str:
        stem = producers.get(rel)
        if not stem:
            return ""
        wall = nbs.get(stem, {}).get("wall_s", "?")
        link = f"notebooks/{stem}.ipynb"
        name = f"<a href='{_e(link)}'>{_e(stem)}</a>" if (out / link).is_file() else _e(stem)
        return f" · from {name} ({_e(str(wall))} s)"

    parts = [*_header(prov, out), *_paper(out, source), *_extras(out, source), *_notebook_table(out, prov)]
    return write_text(out / "index.html", "\n".join([*parts, "</body></html>"]))
