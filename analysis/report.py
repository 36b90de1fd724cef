"""The report model: one JSON document per run, and the two ways people read it.

`build_report` gathers everything into plain data with a fixed key order; `summary_markdown`
fits the verdict into a registry approval description (1024 characters); `render_html` draws one
self-contained page (inline CSS and SVG, no scripts, no network). Everything from data is escaped.
"""
from __future__ import annotations

import datetime as dt
import html
import math
from pathlib import PurePath
from typing import Any

from analysis.gate import Decision
from analysis.quarantine import REASONS
from analysis.results import Accounting, Comparison

REPORT_VERSION = 1
SUMMARY_LIMIT = 1024
"""SageMaker's ModelApprovalDescription (UpdateModelPackage) is at most 1024 characters."""
SCORE_QUANTILES = ("min", "p01", "p05", "p50", "p95", "p99", "max")
_LINE_LIMIT = 240


def build_report(run_info: dict, accounting: Accounting, comparison: Comparison, decision: Decision) -> dict:
    """Everything a run found, as JSON-ready data in a stable key order."""
    evaluation = decision.to_evaluation()
    return {
        "report_version": REPORT_VERSION,
        "run": _plain(run_info, sort=True),
        "verdict": {"status": decision.status, "approved": evaluation["approved"],
                    "reasons": list(decision.reasons)},
        "accounting": {
            **{k: v for k, v in evaluation["accounting"].items() if k != "by_reason"},
            "quarantine": [
                {"reason": code, "records": count, "stage": _reason_field(code, "stage"),
                 "meaning": _reason_field(code, "meaning"), "fix": _reason_field(code, "fix")}
                for code, count in evaluation["accounting"]["by_reason"].items()
            ],
        },
        "checks": evaluation["checks"],
        "headline": evaluation["metrics"],
        "metrics": [
            {"name": m.name, "slice": m.slice, "value": _num(m.value), "production": _num(m.production),
             "candidate": _num(m.candidate), "delta": _num(m.delta), "ci_low": _num(m.ci_low),
             "ci_high": _num(m.ci_high), "support": m.support}
            for m in sorted(comparison.metrics, key=lambda m: (m.slice != "all", m.slice, m.name))
        ],
        "flip_matrix": {str(p): {str(c): int(n) for c, n in sorted(row.items(), key=lambda kv: str(kv[0]))}
                        for p, row in sorted(comparison.flip_matrix.items(), key=lambda kv: str(kv[0]))},
        "score_delta": {k: _num(v) for k, v in comparison.score_delta.items()},
        "has_ground_truth": comparison.has_ground_truth,
    }


def summary_markdown(report: dict) -> str:
    """A short Markdown verdict that always fits SUMMARY_LIMIT: verdict first, then reasons, then numbers."""
    verdict = report["verdict"]
    run = report.get("run", {})
    acc = report["accounting"]
    head = f"**{verdict['status']}** by shadow-eval"
    if run.get("run_id"):
        head += f" (run {run['run_id']})"
    lines = [_clip(head), ""]
    lines.append(_clip(f"Records: {acc['captured']} captured = {acc['joined']} joined + "
                       f"{acc['quarantined']} quarantined (coverage {acc['coverage']:.2%})"))
    lines += [_clip(f"- {reason}") for reason in verdict["reasons"]]
    headline = [f"{name} {_short(values['value'])}" for name, values in report["headline"].items()
                if values["value"] is not None]
    if headline:
        lines.append(_clip("Metrics: " + ", ".join(headline)))
    if run.get("report_uri"):
        lines.append(_clip(f"Report: {run['report_uri']}"))
    return _fit(lines, SUMMARY_LIMIT)


def _fit(lines: list[str], limit: int) -> str:
    """Keep the first lines that fit, then say how many were left out (every line is <= _LINE_LIMIT)."""
    for keep in range(len(lines), 0, -1):
        dropped = len(lines) - keep
        tail = [f"… {dropped} more line{'s' * (dropped != 1)} in report.json"] if dropped else []
        text = "\n".join(lines[:keep] + tail) + "\n"
        if len(text) <= limit:
            return text
    return lines[0][:limit - 1] + "\n"


def render_html(report: dict) -> str:
    """One self-contained HTML page: verdict, accounting, checks, metrics, flips, score deltas."""
    verdict = report["verdict"]
    run = report.get("run", {})
    status = verdict["status"]
    css_class = "ok" if verdict["approved"] else "bad"
    title = f"shadow-eval {status}" + (f" — run {run['run_id']}" if run.get("run_id") else "")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f'<div class="banner {css_class}"><h1>{_e(status)}</h1>',
        "<ul>" + "".join(f"<li>{_e(r)}</li>" for r in verdict["reasons"]) + "</ul></div>",
        _run_section(run),
        _accounting_section(report["accounting"]),
        _checks_section(report["checks"]),
        _headline_section(report["headline"]),
        _flip_section(report["flip_matrix"]),
        _score_section(report["score_delta"]),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:60rem;color:#222;padding:0 1rem}
h1{margin:0 0 .4rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
.banner{padding:1rem 1.4rem;border-radius:6px;color:#fff}.ok{background:#2e7d32}.bad{background:#c62828}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.25rem .6rem;text-align:left}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.fail td{background:#fdecea}tr.missing td{background:#fff4e5}tr.warn td{background:#fffbe6}
.muted{color:#777}svg text{font-size:11px;font-family:system-ui,sans-serif}
""".strip()


def _run_section(run: dict) -> str:
    keys = [k for k in ("run_id", "started_at", "finished_at", "candidate_package", "status_at_start",
                        "production_model", "candidate_model", "report_uri") if run.get(k) is not None]
    if not keys:
        return ""
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(run[k])}</td></tr>" for k in keys)
    return f"<h2>Run</h2><table>{rows}</table>"


def _accounting_section(acc: dict) -> str:
    captured, joined, quarantined = acc["captured"], acc["joined"], acc["quarantined"]
    balanced = "balanced" if acc["balanced"] else "NOT balanced: records are unaccounted for"
    text = (f"<p>{captured} captured = {joined} joined + {quarantined} quarantined "
            f"({_e(balanced)}; coverage {acc['coverage']:.2%})</p>")
    bar = _stacked_bar([("joined", joined, "#2e7d32"), ("quarantined", quarantined, "#c62828")],
                       max(captured, joined + quarantined))
    rows = "".join(
        f"<tr><td>{_e(q['reason'])}</td><td>{_e(q['stage'] or '')}</td><td class=num>{q['records']}</td>"
        f"<td>{_e(q['meaning'] or '')}</td><td>{_e(q['fix'] or '')}</td></tr>"
        for q in acc["quarantine"])
    table = ("<table><tr><th>reason</th><th>stage</th><th>records</th><th>meaning</th><th>what to do</th></tr>"
             f"{rows}</table>" + _bars([(q["reason"], q["records"]) for q in acc["quarantine"]], "#c62828")
             if rows else "<p class=muted>Nothing was quarantined.</p>")
    return f"<h2>Records</h2>{text}{bar}<h3>Quarantine by reason</h3>{table}"


def _checks_section(checks: list[dict]) -> str:
    rows = []
    for c in checks:
        css = "" if c["passed"] else ("missing" if c["outcome"] == "missing" else
                                      "warn" if c["severity"] == "warning" else "fail")
        rows.append(f'<tr class="{css}"><td>{_e(c["name"])}</td><td>{_e(c["metric"])}</td>'
                    f'<td class=num>{_e(_short(c["value"]))}</td><td>{_e(c["direction"])}</td>'
                    f'<td class=num>{_e(_short(c["threshold"]))}</td><td>{_e(c["severity"])}</td>'
                    f'<td>{_e(c["outcome"])}</td><td>{_e(c["reason"])}</td></tr>')
    return ("<h2>Checks</h2><table><tr><th>check</th><th>metric</th><th>value</th><th>direction</th>"
            "<th>threshold</th><th>severity</th><th>outcome</th><th>reason</th></tr>" + "".join(rows) + "</table>")


def _headline_section(headline: dict) -> str:
    if not headline:
        return "<h2>Metrics</h2><p class=muted>No metrics were computed.</p>"
    cols = ("value", "production", "candidate", "delta", "ci_low", "ci_high", "support")
    rows = "".join("<tr><td>" + _e(name) + "</td>" + "".join(f"<td class=num>{_e(_short(v[c]))}</td>" for c in cols)
                   + "</tr>" for name, v in headline.items())
    return ("<h2>Metrics</h2><table><tr><th>metric</th>" + "".join(f"<th>{c}</th>" for c in cols) + "</tr>"
            + rows + "</table>")


def _flip_section(matrix: dict[str, dict[str, int]]) -> str:
    if not matrix:
        return "<h2>Label flips</h2><p class=muted>No labels to compare.</p>"
    production = list(matrix)
    candidate = sorted({c for row in matrix.values() for c in row})
    # Agreements and flips are shaded on separate scales so a few flips still show beside many agreements.
    peaks = {same: max((n for p, row in matrix.items() for c, n in row.items() if (p == c) == same), default=0) or 1
             for same in (True, False)}
    cell, left, top = 56, 110, 40
    width, height = left + cell * len(candidate) + 10, top + cell * len(production) + 10
    svg = [f'<svg width="{width}" height="{height}" role="img" aria-label="label flip matrix">',
           f'<text x="{left}" y="12">candidate label →</text>']
    for j, label in enumerate(candidate):
        svg.append(f'<text x="{left + j * cell + cell / 2}" y="{top - 8}" text-anchor="middle">'
                   f'{_e(_cut(label))}</text>')
    for i, plabel in enumerate(production):
        y = top + i * cell
        svg.append(f'<text x="{left - 6}" y="{y + cell / 2 + 4}" text-anchor="end">{_e(_cut(plabel))}</text>')
        for j, clabel in enumerate(candidate):
            n = matrix[plabel].get(clabel, 0)
            shade = 0.08 + 0.92 * n / peaks[plabel == clabel]
            colour = "46,125,50" if plabel == clabel else "198,40,40"
            ink = "#fff" if shade > 0.6 else "#222"
            svg.append(f'<rect x="{left + j * cell}" y="{y}" width="{cell - 2}" height="{cell - 2}" '
                       f'fill="rgba({colour},{shade:.2f})"><title>{_e(plabel)} → {_e(clabel)}: {n}</title></rect>')
            svg.append(f'<text x="{left + j * cell + cell / 2 - 1}" y="{y + cell / 2 + 4}" '
                       f'text-anchor="middle" fill="{ink}">{n}</text>')
    svg.append("</svg>")
    flipped = sum(n for p, row in matrix.items() for c, n in row.items() if p != c)
    total = sum(n for row in matrix.values() for n in row.values())
    return (f"<h2>Label flips</h2><p>{flipped} of {total} records changed label "
            "(rows: production label, columns: candidate label).</p>" + "".join(svg))


def _score_section(delta: dict[str, float | None]) -> str:
    if not delta or all(v is None for v in delta.values()):
        return "<h2>Score delta</h2><p class=muted>No scores to compare.</p>"
    rows = "".join(f"<tr><td>{_e(k)}</td><td class=num>{_e(_short(v))}</td></tr>" for k, v in delta.items())
    return ("<h2>Score delta (candidate − production)</h2>" + _quantile_strip(delta)
            + f"<table><tr><th>statistic</th><th>value</th></tr>{rows}</table>")


def _quantile_strip(delta: dict[str, float | None]) -> str:
    """A box-plot-like strip: whiskers min..max, box p05..p95, line at the median, zero marked."""
    points = {k: delta[k] for k in SCORE_QUANTILES if delta.get(k) is not None}
    if len(points) < 2:
        return ""
    low, high = min(min(points.values()), 0.0), max(max(points.values()), 0.0)
    span = (high - low) or 1.0
    width, left, right = 640, 20, 20

    def x(v: float) -> float:
        return round(left + (v - low) / span * (width - left - right), 1)

    svg = [f'<svg width="{width}" height="90" role="img" aria-label="score delta quantiles">',
           f'<line x1="{x(0)}" y1="10" x2="{x(0)}" y2="70" stroke="#999" stroke-dasharray="3,3"/>',
           f'<text x="{x(0)}" y="84" text-anchor="middle">0</text>']
    if "min" in points and "max" in points:
        svg.append(f'<line x1="{x(points["min"])}" y1="40" x2="{x(points["max"])}" y2="40" stroke="#555"/>')
    if "p05" in points and "p95" in points:
        svg.append(f'<rect x="{x(points["p05"])}" y="25" width="{max(x(points["p95"]) - x(points["p05"]), 1)}" '
                   'height="30" fill="#90caf9" stroke="#1565c0"/>')
    if "p50" in points:
        svg.append(f'<line x1="{x(points["p50"])}" y1="22" x2="{x(points["p50"])}" y2="58" '
                   'stroke="#0d47a1" stroke-width="2"/>')
    for name, value in points.items():
        svg.append(f'<circle cx="{x(value)}" cy="40" r="2.5" fill="#333">'
                   f'<title>{name}: {_short(value)}</title></circle>')
    svg.append(f'<text x="{left}" y="84">{_e(_short(low))}</text>')
    svg.append(f'<text x="{width - right}" y="84" text-anchor="end">{_e(_short(high))}</text></svg>')
    return "".join(svg)


def _stacked_bar(segments: list[tuple[str, int, str]], total: int) -> str:
    width, x = 640, 0.0
    svg = [f'<svg width="{width}" height="28" role="img" aria-label="record accounting">']
    for name, count, colour in segments:
        w = width * count / total if total else 0
        if w:
            svg.append(f'<rect x="{x:.1f}" y="2" width="{w:.1f}" height="24" fill="{colour}">'
                       f'<title>{_e(name)}: {count}</title></rect>')
        x += w
    svg.append("</svg>")
    return "".join(svg)


def _bars(items: list[tuple[str, int]], colour: str) -> str:
    if not items:
        return ""
    peak = max(n for _, n in items) or 1
    left, width, row = 200, 640, 20
    svg = [f'<svg width="{width}" height="{row * len(items) + 4}" role="img" aria-label="quarantine by reason">']
    for i, (name, n) in enumerate(items):
        y = i * row + 2
        w = (width - left - 60) * n / peak
        svg.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{_e(_cut(name, 30))}</text>'
                   f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{row - 4}" fill="{colour}"/>'
                   f'<text x="{left + w + 4:.1f}" y="{y + 13}">{n}</text>')
    svg.append("</svg>")
    return "".join(svg)


def _reason_field(code: str, field: str) -> str | None:
    declared = REASONS.get(code)
    return getattr(declared, field) if declared else None


def _plain(value: Any, sort: bool = False) -> Any:
    """JSON-ready: dicts (keys sorted), lists, numbers (NaN -> null), times and paths as text."""
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: str(kv[0])) if sort else value.items()
        return {str(k): _plain(v, sort) for k, v in items}
    if isinstance(value, (list, tuple)):
        return [_plain(v, sort) for v in value]
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def _num(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _short(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _clip(line: str) -> str:
    return line if len(line) <= _LINE_LIMIT else line[:_LINE_LIMIT - 1] + "…"


def _cut(text: str, limit: int = 8) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)
