"""A self-contained HTML page of validation results (no Data Docs site, no files fetched online)."""

from __future__ import annotations

from collections.abc import Iterable
from html import escape
from pathlib import Path

import pandas as pd

from scoutless.paths import atomic_path

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.pass { color: #1a7f37; font-weight: bold; } .fail { color: #cf222e; font-weight: bold; }
.note { color: #555; }
"""
SAMPLE_ROWS = 20


def _table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in row) + "</tr>" for row in frame.itertuples(index=False)
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def write_html_report(path: Path, title: str, outcomes: Iterable, quarantined: dict[str, pd.DataFrame]) -> Path:
    """Write the report: per table its counts, every expectation's result, and sample quarantined rows."""
    sections = []
    for outcome in outcomes:
        if outcome.table_failures:
            status, label = "fail", "TABLE FAILED"
        elif outcome.bad_rows:
            status, label = "fail", "ROWS QUARANTINED"
        else:
            status, label = "pass", "CLEAN"
        rows = pd.DataFrame([{
            "result": "passed" if e.success else "FAILED",
            "expectation": e.name,
            "bad rows": e.unexpected_count,
            "% of rows": f"{e.unexpected_percent:.3g}",
            "sample values": ", ".join(e.sample_values) or (e.observed or ""),
            "error": e.error or "",
        } for e in outcome.expectations])
        bad = quarantined.get(outcome.table, pd.DataFrame())
        sample = bad.head(SAMPLE_ROWS)
        if "failed_expectations" in sample:
            sample = sample[["failed_expectations", *[c for c in sample.columns if c != "failed_expectations"]]]
        sections.append(
            f"<h2>{escape(outcome.table)} <span class='{status}'>{label}</span></h2>"
            f"<p>{outcome.rows:,} rows; {outcome.bad_rows:,} quarantined ({outcome.bad_fraction:.2%}).</p>"
            + _table(rows)
            + (f"<h3>Quarantined rows (first {len(sample)} of {len(bad):,})</h3>" + _table(sample) if len(bad) else "")
        )
    html = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{escape(title)}</h1>"
        "<p class='note'>Rows that fail a row-level expectation are kept in data/quarantine/ with the "
        "expectations they failed; the clean rows go on to feature building.</p>"
        + "".join(sections) + "</body></html>"
    )
    with atomic_path(path) as tmp:
        tmp.write_text(html)
    return path
