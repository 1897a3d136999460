"""reports/drift/index.html: the verdict of a drift check, its numbers, and links to Evidently's pages."""

from __future__ import annotations

from html import escape
from pathlib import Path

from scoutless.paths import atomic_path

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left; }
th { background: #f3f3f3; }
.drift { color: #cf222e; font-weight: bold; } .ok { color: #1a7f37; font-weight: bold; }
"""


def _number(value) -> str:
    return "—" if value is None or value != value else f"{value:.4g}" if isinstance(value, float) else str(value)


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _flag(drifted: bool) -> str:
    return '<span class="drift">drifted</span>' if drifted else '<span class="ok">no</span>'


def _columns(section: dict | None) -> str:
    if not section:
        return "<p>Not tested.</p>"
    rows = [[escape(c), escape(d["method"]), _number(d["score"]), _number(d["threshold"]), _flag(d["drifted"])]
            for c, d in sorted(section["columns"].items(), key=lambda item: (not item[1]["drifted"], item[0]))]
    rows += [[escape(c), "—", "—", "—", f"skipped: {escape(why)}"] for c, why in section["skipped"].items()]
    return _table(["column", "method", "score", "threshold", "drift"], rows)


def write_index(path: Path, report: dict) -> None:
    verdict = report["verdict"]
    css = "drift" if report["retrain"] else "ok"
    parts = [f"<h1>Drift check</h1><p>Checked {escape(report['checked_at'])}: "
             f"<span class=\"{css}\">{escape(verdict.replace('_', ' '))}</span>"
             f"{' — retrain' if report['retrain'] else ''}.</p>"]
    if report["reasons"]:
        parts.append("<ul>" + "".join(f"<li>{escape(r)}</li>" for r in report["reasons"]) + "</ul>")
    links = [f'<a href="{escape(page)}">{escape(name)}</a>' for name, page in report["pages"].items()]
    if links:
        parts.append("<p>Evidently reports: " + " · ".join(links) + "</p>")
    windows = report["windows"]
    parts.append(f"<h2>Windows</h2><p>Models trained on tasks created until {escape(windows['trained_until'])}.</p>")
    parts.append(_table(["window", "from", "to", "tasks"], [
        [name.replace("_", " "), escape(str(w["start"])), escape(str(w["end"])), w["tasks"]]
        for name, w in windows.items() if isinstance(w, dict)]))
    if report["features"] is not None:
        share = report["features"]["drifted_share"]
        parts.append(f"<h2>Features</h2><p>Drifted share: {_number(share)} "
                     f"(retrain at {_number(report['rule']['drifted_features_share'])}).</p>")
        parts.append(_columns(report["features"]))
        parts.append("<h2>Predictions (request quantile)</h2>" + _columns(report["predictions"]))
        rows = [[escape(t), e["labelled"], _number(e["current"]), _number(e["reference"]), _number(e["ratio"]),
                 _flag(e["exceeds_margin"]),
                 _flag(e["drift"]["drifted"]) if e["drift"] else escape(e["skipped"] or "—")]
                for t, e in report["errors"].items()]
        parts.append("<h2>Errors (pinball loss of the request quantile)</h2>" + _table(
            ["target", "labelled current tasks", "current error", "reference error", "ratio",
             f"above x{1 + report['rule']['error_margin']:g}", "error distribution drift"], rows))
    page = (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>scoutless drift check</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>\n")
    with atomic_path(path) as tmp:
        tmp.write_text(page)
