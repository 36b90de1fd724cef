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
from analysis.quarantine import REASONS, owner_of
from analysis.report_operational import operational_section
from analysis.results import Accounting, Comparison

REPORT_VERSION = 3
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
                    "rejected": evaluation["rejected"], "inconclusive": evaluation["inconclusive"],
                    "reasons": list(decision.reasons), "task": evaluation["task"], "policy": evaluation["policy"]},
        "accounting": {
            **{k: v for k, v in evaluation["accounting"].items() if k != "by_reason"},
            "quarantine": [
                {"reason": code, "records": count, "owner": owner_of(code), "stage": _reason_field(code, "stage"),
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
        "task": getattr(comparison, "task", None),
        "statistics": _plain(getattr(comparison, "settings", {}) or {}, sort=True),
        "diff": _plain(diff.to_json()) if (diff := getattr(comparison, "diff", None)) is not None else None,
        "segments": [segment.to_json() for segment in getattr(comparison, "segments", ())],
        "distributions": _plain(getattr(comparison, "distributions", {}) or {}),
        "weak_segments": _plain(scan.to_json()) if (scan := getattr(comparison, "segment_scan", None)) else None,
        # Latency and errors (analysis.operational); left out when the run measured none.
        **({"operational": _plain(comparison.operational)} if getattr(comparison, "operational", None) else {}),
    }


def summary_markdown(report: dict) -> str:
    """A short Markdown verdict that always fits SUMMARY_LIMIT.

    The first line names the verdict and the run id, the last the report's location (provenance);
    between them the record accounting, the reasons and the headline numbers, dropped from the end
    (with a count of what was left out) when they do not fit.
    """
    verdict = report["verdict"]
    run = report.get("run", {})
    acc = report["accounting"]
    head = f"**{verdict['status']}** by shadow-eval"
    if run.get("run_id"):
        head += f" (run {run['run_id']})"
    lines = [_clip(head), ""]
    lines.append(_clip(f"Records: {acc['captured']} captured = {acc['joined']} joined + "
                       f"{acc['quarantined']} quarantined (coverage {acc['coverage']:.2%})"
                       + _owners_text(acc.get("by_owner") or {})))
    lines += [_clip(f"- {reason}") for reason in verdict["reasons"]]
    task = verdict.get("task") or {}
    if task:
        lines.append(_clip(f"Judged on {task.get('judged_on')}: {task.get('task') or 'task unknown'} "
                           f"({task.get('why')})"))
    names = [n for n in _SUMMARY_METRICS if (report["headline"].get(n) or {}).get("value") is not None]
    headline = [f"{name} {_short(report['headline'][name]['value'])}" for name in names]
    if headline:
        lines.append(_clip("Metrics: " + ", ".join(headline)))
    tail = [_clip(f"Report: {run['report_uri']}")] if run.get("report_uri") else []
    return _fit(lines, tail, SUMMARY_LIMIT)


_SUMMARY_METRICS = ("label_agreement", "cohen_kappa", "accuracy", "real_difference_rate", "replay_exact_match_rate",
                    "mae", "score_psi")


def _owners_text(owners: dict[str, int]) -> str:
    lost = [f"{owner} {count}" for owner, count in owners.items() if count]
    return f"; quarantined by owner: {', '.join(lost)}" if lost else ""


def _fit(lines: list[str], tail: list[str], limit: int) -> str:
    """Keep the first lines that fit with the tail, then say how many were left out (lines are <= _LINE_LIMIT)."""
    for keep in range(len(lines), 0, -1):
        dropped = len(lines) - keep
        note = [f"… {dropped} more line{'s' * (dropped != 1)} in report.json"] if dropped else []
        text = "\n".join(lines[:keep] + note + tail) + "\n"
        if len(text) <= limit:
            return text
    return (lines[0][:limit // 2] + "\n" + "\n".join(tail))[:limit - 1] + "\n"


def render_html(report: dict) -> str:
    """One self-contained HTML page: verdict, checks, records, noise floor, diff, statistics, slices, plots."""
    verdict = report["verdict"]
    run = report.get("run", {})
    status = verdict["status"]
    css_class = {"Approved": "ok", "Rejected": "bad"}.get(status, "wait")
    title = f"shadow-eval {status}" + (f" — run {run['run_id']}" if run.get("run_id") else "")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f'<div class="banner {css_class}" id="verdict"><h1>{_e(status)}</h1>',
        "<ul>" + "".join(f"<li>{_e(r)}</li>" for r in verdict["reasons"]) + "</ul></div>",
        _policy_section(verdict),
        _run_section(run),
        _checks_section(report["checks"]),
        _accounting_section(report["accounting"]),
        _noise_section(report.get("headline", {}), report.get("diff")),
        _quality_section(report.get("headline", {}), report.get("statistics") or {}, report.get("task")),
        _headline_section(report["headline"]),
        _flip_section(report["flip_matrix"]),
        _distribution_section(report.get("distributions") or {}),
        _score_section(report["score_delta"]),
        _diff_section(report.get("diff")),
        _slices_section(report.get("segments") or [], report["metrics"], report["checks"]),
        _weak_segments_section(report.get("weak_segments")),
        operational_section(report.get("operational") or {}, report.get("headline", {}), report["checks"]),
        _statistics_note(report.get("statistics") or {}),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:76rem;color:#222;padding:0 1rem}
h1{margin:0 0 .4rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
.banner{padding:1rem 1.4rem;border-radius:6px;color:#fff}.ok{background:#2e7d32}.bad{background:#c62828}
.wait{background:#8a6d00}
table{border-collapse:collapse;margin:.5rem 0}table.wide{width:100%}td,th{border:1px solid #ddd;padding:.25rem .6rem;text-align:left}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.text{overflow-wrap:anywhere;min-width:9rem}td.interval{text-align:right;font-variant-numeric:tabular-nums}
tr.fail td{background:#fdecea}tr.missing td{background:#fff4e5}tr.warn td{background:#fffbe6}
.muted{color:#777}svg text{font-size:11px;font-family:system-ui,sans-serif}
tr.flagged td{background:#fdecea;font-weight:600}td.code{font-family:ui-monospace,monospace;font-size:12px;
max-width:28rem;overflow-wrap:anywhere}.legend span{display:inline-block;margin-right:1rem}
.swatch{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem;vertical-align:middle}
""".strip()


_POLICY_TEXT = (
    "Approved: the evidence shows the candidate is no worse than production by more than the margin. "
    "Rejected: it shows the candidate is worse, or broken. Inconclusive: it cannot tell yet. With ground truth "
    "the task's quality metric (accuracy, and recall of minority classes; or MAE) is judged by non-inferiority "
    "on the paired interval of candidate - production, overall and per slice. Without ground truth the candidate "
    "is approved only when equivalent to production within replay noise, rejected when broken (one constant "
    "answer, inverted labels), and otherwise awaits ground truth. Records the capture spoiled are excluded; "
    "the candidate's own failures count against it; records the evaluation lost never do.")


def _policy_section(verdict: dict) -> str:
    task, policy = verdict.get("task") or {}, verdict.get("policy") or {}
    if not task and not policy:
        return ""
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_short(v))}</td></tr>" for k, v in policy.items())
    return (f"<h2>What was judged</h2><p><b>{_e(task.get('task') or 'no task (no ground truth)')}</b>, on "
            f"{_e(task.get('judged_on') or '')}: {_e(task.get('why') or '')}.</p>"
            f"<p class=muted>{_e(_POLICY_TEXT)}</p><table>{rows}</table>")


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
    owners = acc.get("by_owner") or {}
    if owners:
        text += ("<p>Quarantined by owner: " + ", ".join(f"{_e(o)} {n}" for o, n in owners.items())
                 + " <span class=muted>(capture: excluded; candidate: counts against it; evaluation: the tool's own "
                 "loss, never the candidate's)</span></p>")
    bar = _stacked_bar([("joined", joined, "#2e7d32"), ("quarantined", quarantined, "#c62828")],
                       max(captured, joined + quarantined))
    rows = "".join(
        f"<tr><td>{_e(q['reason'])}</td><td>{_e(q.get('owner') or '')}</td><td>{_e(q['stage'] or '')}</td>"
        f"<td class=num>{q['records']}</td>"
        f"<td>{_e(q['meaning'] or '')}</td><td>{_e(q['fix'] or '')}</td></tr>"
        for q in acc["quarantine"])
    table = ("<table><tr><th>reason</th><th>owner</th><th>stage</th><th>records</th><th>meaning</th><th>what to do</th></tr>"
             f"{rows}</table>" + _bars([(q["reason"], q["records"]) for q in acc["quarantine"]], "#c62828")
             if rows else "<p class=muted>Nothing was quarantined.</p>")
    return f"<h2>Records</h2>{text}{bar}<h3>Quarantine by reason</h3>{table}"


def _checks_section(checks: list[dict]) -> str:
    rows = []
    for c in checks:
        css = "" if c["passed"] else ("missing" if c["outcome"] in ("missing", "undecided") else
                                      "warn" if c["severity"] == "warning" else "fail")
        interval = (f"[{_short(c.get('ci_low'))}, {_short(c.get('ci_high'))}]"
                    if c.get("ci_low") is not None or c.get("ci_high") is not None else "")
        rows.append(f'<tr class="{css}"><td class=text>{_e(c["name"])}</td><td>{_e(c["metric"])}</td>'
                    f'<td>{_e(c.get("judged_on", "point"))}</td>'
                    f'<td class=num>{_e(_short(c["value"] if c.get("estimate") is None else c["estimate"]))}</td><td class=interval>{_e(interval)}</td>'
                    f'<td>{_e(c["direction"])}</td>'
                    f'<td class=num>{_e(_short(c["threshold"]))}</td><td>{_e(c["severity"])}</td>'
                    f'<td>{_e(c["outcome"])}</td><td class=text>{_e(c["reason"])}</td></tr>')
    return ("<h2>Checks</h2><table class=wide><tr><th>check</th><th>metric</th><th>records judged</th><th>estimate</th>"
            "<th>interval</th><th>direction</th><th>threshold</th><th>severity</th><th>outcome</th><th>reason</th>"
            "</tr>" + "".join(rows) + "</table>")


def _noise_section(headline: dict, diff: dict | None) -> str:
    def value(name: str) -> Any:
        return (headline.get(name) or {}).get("value")

    replay = value("replay_exact_match_rate")
    lines = []
    if replay is None:
        lines.append("<p class=muted>Production was not replayed (no noise floor): a difference counts as real when "
                     "it exceeds the configured tolerances.</p>")
    else:
        lines.append(f"<p>Production replayed through the same path answered as captured on {_pct(replay)} of "
                     f"records; it changed its own label on {_pct(value('replay_label_flip_rate'))}, its score by "
                     f"{_short(value('replay_mean_abs_score_delta'))} on average. A score change up to "
                     f"{_short(value('noise_score_band'))} is replay noise.</p>")
    if diff:
        lines.append(f"<p>The candidate differs from production beyond that noise on <b>{diff['beyond_noise']}</b> of "
                     f"{diff['records']} records ({_pct(value('real_difference_rate'))}); real label flips: "
                     f"{_pct(value('real_label_flip_rate'))}.</p>")
    return "<h2>Noise floor</h2>" + "".join(lines)


def _quality_section(headline: dict, statistics: dict, task: str | None) -> str:
    names = [n for n in ("accuracy", "precision", "recall", "f1", "roc_auc", "mae", "rmse") if n in headline]
    if not names:
        return "<h2>Quality against ground truth</h2><p class=muted>No ground truth joined.</p>"
    confidence = statistics.get("confidence")
    rows = "".join(
        f"<tr><td>{_e(n)}</td><td class=num>{_e(_short(headline[n]['production']))}</td>"
        f"<td class=num>{_e(_short(headline[n]['candidate']))}</td><td class=num>{_e(_short(headline[n]['delta']))}"
        f"</td><td class=num>[{_e(_short(headline[n]['ci_low']))}, {_e(_short(headline[n]['ci_high']))}]</td>"
        f"<td class=num>{headline[n]['support']}</td></tr>" for n in names)
    mcnemar = (headline.get("mcnemar_p_value") or {})
    note = (f"<p>McNemar's exact test on the {mcnemar.get('support')} records exactly one model got right: "
            f"p = {_short(mcnemar.get('value'))}.</p>" if mcnemar.get("value") is not None else "")
    level = f"{confidence:.0%} " if confidence else ""
    return (f"<h2>Quality against ground truth ({_e(task or '')})</h2>"
            f"<table><tr><th>metric</th><th>production</th><th>candidate</th><th>delta</th>"
            f"<th>{level}interval of delta</th><th>records</th></tr>{rows}</table>"
            + _interval_plot([(n, headline[n]["delta"], headline[n]["ci_low"], headline[n]["ci_high"])
                              for n in names]) + note)


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


def _distribution_section(dist: dict) -> str:
    if not dist:
        return ""
    return ("<h2>Scores: production vs candidate</h2>" + _scatter(dist["scatter"])
            + "<h3>Score distributions</h3>" + _overlaid_histograms(dist)
            + "<h3>Score delta histogram (candidate − production)</h3>"
            + _histogram(dist["delta_edges"], dist["delta_counts"], "#1565c0", "score delta histogram"))


def _diff_section(diff: dict | None) -> str:
    if not diff:
        return ""
    crossings = "".join(f"<tr><td class=num>{_short(c['threshold'])}</td><td class=num>{c['up']}</td>"
                        f"<td class=num>{c['down']}</td><td class=num>{c['crossed']}</td>"
                        f"<td class=num>{c['scored']}</td></tr>" for c in diff["crossings"])
    parts = [f"<h2>Typed diff</h2><p>{diff['exact']} of {diff['records']} records hash alike; {diff['tolerant']} "
             f"match within tolerance; {diff['records_one_sided']} have output on one side only.</p>"]
    if crossings:
        parts.append("<h3>Threshold crossings</h3><table><tr><th>threshold</th><th>up (production below)</th>"
                     f"<th>down (candidate below)</th><th>crossed</th><th>scored</th></tr>{crossings}</table>")
    for side, key in (("production", "fields_only_production"), ("candidate", "fields_only_candidate")):
        if diff[key]:
            rows = "".join(f"<tr><td class=code>{_e(f)}</td><td class=num>{n}</td></tr>"
                           for f, n in list(diff[key].items())[:20])
            parts.append(f"<h3>Output fields only {side} has</h3><table><tr><th>field</th><th>records</th></tr>"
                         f"{rows}</table>")
    if diff["top_changes"]:
        rows = "".join(
            f'<tr class="{"flagged" if r["beyond_noise"] else ""}"><td class=code>{_e(r["record_id"])}</td>'
            f'<td class=code>{_e(r["input_text"] or "")}</td><td class=code>{_e(r["production_raw"] or "")}</td>'
            f'<td class=code>{_e(r["candidate_raw"] or "")}</td><td class=num>{_e(_short(r["score_delta"]))}</td>'
            f'<td>{"yes" if r["beyond_noise"] else "no"}</td></tr>' for r in diff["top_changes"])
        parts.append("<h3>Most changed records</h3><table><tr><th>record</th><th>input</th><th>production</th>"
                     f"<th>candidate</th><th>score delta</th><th>beyond noise</th></tr>{rows}</table>")
    return "".join(parts)


_SLICE_COLUMNS = ("label_agreement", "accuracy", "mae", "mean_abs_score_delta", "real_difference_rate")


def _slices_section(segments: list[dict], metrics: list[dict], checks: list[dict]) -> str:
    if not segments:
        return ""
    by_slice: dict[str, dict[str, dict]] = {}
    for m in metrics:
        by_slice.setdefault(m["slice"], {})[m["name"]] = m
    flagged: dict[str, list[str]] = {}
    for c in checks:
        for entry in c.get("slices", []):
            if entry["flagged"]:
                flagged.setdefault(entry["slice"], []).append(c["name"])
    columns = [n for n in _SLICE_COLUMNS if any(n in values for values in by_slice.values())]
    head = "".join(f"<th>{_e(n)}</th>" for n in columns)
    rows = []
    for seg in segments:
        values = by_slice.get(seg["name"], {})
        cells = "".join(f"<td class=num>{_e(_slice_cell(values.get(n)))}</td>" for n in columns)
        note = ("flagged: " + ", ".join(flagged[seg["name"]]) if seg["name"] in flagged
                else ("" if seg["compared"] else "too few records"))
        css = "flagged" if seg["name"] in flagged else ("" if seg["compared"] else "muted")
        rows.append(f'<tr class="{css}"><td>{_e(seg["name"])}</td><td class=num>{seg["support"]}</td>{cells}'
                    f"<td>{_e(note)}</td></tr>")
    return ("<h2>Slices</h2><p>Per-model metrics show candidate − production with its interval; flagged slices "
            "credibly miss a slice check after Holm's correction.</p>"
            f"<table><tr><th>slice</th><th>records</th>{head}<th>gate</th></tr>{''.join(rows)}</table>")


def _weak_segments_section(scan: dict | None) -> str:
    """Automatic segments: the flagged and the weakest, with the evidence behind each."""
    if not scan or not scan["listed"]:
        return ""
    judged = scan["margin"] is not None
    if scan["metric"] == "accuracy":
        rule = f"accuracy more than {_short(scan['margin'] * 100)} points below production's"
    elif scan["metric"] == "mae":
        rule = f"MAE more than {scan['margin']:.0%} above production's"
    else:
        rule = None
    intro = (f"Every input column or field and CustomAttributes key cut into segments: {scan['features']} features, "
             f"{scan['segments']} segments, {scan['tested']} with enough records tested")
    if scan["features_skipped"]:
        intro += f" ({scan['features_skipped']} features past the limit not segmented)"
    intro += (f". Flagged: credibly {rule} (one-sided test, {scan['correction']} at "
              f"{_short(scan['alpha'])} over all {scan['tested']}); {scan['flagged']} flagged."
              if judged else f". No ground truth: {scan['metric']} per segment, for information only.")
    rows = []
    for seg in scan["listed"]:
        quality = (f"{_short(seg['production_quality'])} → {_short(seg['candidate_quality'])}"
                   if seg["production_quality"] is not None else "—")
        delta = f"{_short(seg['delta'])} [{_short(seg['ci_low'])}, {_short(seg['ci_high'])}]"
        rows.append(f'<tr class="{"flagged" if seg["flagged"] else ""}"><td>{_e(seg["feature"])}</td>'
                    f"<td>{_e(seg['segment'])}</td><td class=num>{seg['support']}</td>"
                    f"<td class=num>{seg['labelled']}</td><td class=num>{_e(quality)}</td>"
                    f"<td class=num>{_e(delta)}</td><td class=num>{_e(_short(seg['p']))}</td>"
                    f"<td class=num>{_e(_short(seg['p_adjusted']))}</td><td>{'flagged' if seg['flagged'] else ''}</td>"
                    "</tr>")
    return (f"<h2>Weakest segments</h2><p>{_e(intro)}</p><table><tr><th>feature</th><th>segment</th><th>records</th>"
            f"<th>records judged</th><th>{_e(scan['metric'])} production → candidate</th><th>delta [interval]</th>"
            f"<th>p</th><th>adjusted p</th><th></th></tr>{''.join(rows)}</table>")


def _slice_cell(metric: dict | None) -> str:
    if metric is None:
        return "—"
    if metric.get("delta") is not None:
        return f"{_short(metric['delta'])} [{_short(metric['ci_low'])}, {_short(metric['ci_high'])}]"
    return _short(metric["value"])


def _statistics_note(statistics: dict) -> str:
    if not statistics:
        return ""
    return (f"<p class=muted>Intervals: {_short(statistics.get('confidence'))} two-sided; per-model deltas and "
            f"score statistics by paired bootstrap ({statistics.get('bootstrap_resamples')} resamples, seed "
            f"{statistics.get('seed')}), shares by Wilson score. Slices with fewer than "
            f"{statistics.get('min_slice_support')} records are not compared.</p>")


def _scatter(points: list[list[float]]) -> str:
    if not points:
        return ""
    size, pad = 360, 36
    values = [v for point in points for v in point]
    low, high = min(values), max(values)
    span = (high - low) or 1.0

    def at(v: float) -> float:
        return round(pad + (v - low) / span * (size - 2 * pad), 1)

    svg = [f'<svg width="{size}" height="{size}" role="img" aria-label="production vs candidate scores">',
           f'<rect x="{pad}" y="{pad}" width="{size - 2 * pad}" height="{size - 2 * pad}" fill="none" stroke="#ccc"/>',
           f'<line x1="{at(low)}" y1="{size - at(low)}" x2="{at(high)}" y2="{size - at(high)}" stroke="#999" '
           'stroke-dasharray="4,3"/>']
    svg += [f'<circle cx="{at(p)}" cy="{round(size - at(c), 1)}" r="2" fill="rgba(21,101,192,.5)"/>'
            for p, c in points]
    svg.append(f'<text x="{size / 2}" y="{size - 6}" text-anchor="middle">production score</text>'
               f'<text x="12" y="{size / 2}" transform="rotate(-90 12 {size / 2})" text-anchor="middle">'
               'candidate score</text>'
               f'<text x="{pad}" y="{size - pad + 14}">{_e(_short(low))}</text>'
               f'<text x="{size - pad}" y="{size - pad + 14}" text-anchor="end">{_e(_short(high))}</text></svg>')
    return "".join(svg)


def _histogram(edges: list[float], counts: list[int], colour: str, label: str) -> str:
    if not counts:
        return ""
    width, height, pad = 640, 150, 24
    peak = max(counts) or 1
    bar = (width - 2 * pad) / len(counts)
    svg = [f'<svg width="{width}" height="{height + 20}" role="img" aria-label="{_e(label)}">']
    for i, n in enumerate(counts):
        h = (height - pad) * n / peak
        svg.append(f'<rect x="{pad + i * bar:.1f}" y="{height - h:.1f}" width="{max(bar - 1, 1):.1f}" '
                   f'height="{h:.1f}" fill="{colour}"><title>[{_short(edges[i])}, {_short(edges[i + 1])}): {n}'
                   "</title></rect>")
    svg.append(f'<text x="{pad}" y="{height + 14}">{_e(_short(edges[0]))}</text>'
               f'<text x="{width - pad}" y="{height + 14}" text-anchor="end">{_e(_short(edges[-1]))}</text></svg>')
    return "".join(svg)


def _overlaid_histograms(dist: dict) -> str:
    edges, production, candidate = dist["score_edges"], dist["production_counts"], dist["candidate_counts"]
    width, height, pad = 640, 150, 24
    peak = max(production + candidate) or 1
    bar = (width - 2 * pad) / len(production)
    svg = [f'<svg width="{width}" height="{height + 20}" role="img" aria-label="score distributions">']
    for i, (p, c) in enumerate(zip(production, candidate)):
        for offset, n, colour in ((0, p, "#ef6c00"), (bar / 2, c, "#1565c0")):
            h = (height - pad) * n / peak
            svg.append(f'<rect x="{pad + i * bar + offset:.1f}" y="{height - h:.1f}" width="{max(bar / 2 - 1, 1):.1f}" '
                       f'height="{h:.1f}" fill="{colour}"><title>{"production" if offset == 0 else "candidate"} '
                       f"[{_short(edges[i])}, {_short(edges[i + 1])}): {n}</title></rect>")
    svg.append(f'<text x="{pad}" y="{height + 14}">{_e(_short(edges[0]))}</text>'
               f'<text x="{width - pad}" y="{height + 14}" text-anchor="end">{_e(_short(edges[-1]))}</text></svg>')
    legend = ('<div class="legend"><span><i class="swatch" style="background:#ef6c00"></i>production</span>'
              '<span><i class="swatch" style="background:#1565c0"></i>candidate</span></div>')
    return legend + "".join(svg)


def _interval_plot(rows: list[tuple[str, float | None, float | None, float | None]]) -> str:
    """Each delta as a point with its interval, zero marked: a forest plot."""
    rows = [r for r in rows if r[1] is not None]
    if not rows:
        return ""
    values = [v for _, d, lo, hi in rows for v in (d, lo, hi) if v is not None] + [0.0]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    width, left, right, row = 640, 90, 20, 22

    def x(v: float) -> float:
        return round(left + (v - low) / span * (width - left - right), 1)

    svg = [f'<svg width="{width}" height="{row * len(rows) + 24}" role="img" aria-label="deltas with intervals">',
           f'<line x1="{x(0)}" y1="0" x2="{x(0)}" y2="{row * len(rows)}" stroke="#999" stroke-dasharray="3,3"/>']
    for i, (name, d, lo, hi) in enumerate(rows):
        y = i * row + row / 2
        svg.append(f'<text x="{left - 6}" y="{y + 4}" text-anchor="end">{_e(name)}</text>')
        if lo is not None and hi is not None:
            svg.append(f'<line x1="{x(lo)}" y1="{y}" x2="{x(hi)}" y2="{y}" stroke="#1565c0" stroke-width="2"/>')
        svg.append(f'<circle cx="{x(d)}" cy="{y}" r="3.5" fill="#0d47a1"><title>{_e(name)} delta {_short(d)}'
                   f"</title></circle>")
    svg.append(f'<text x="{left}" y="{row * len(rows) + 16}">{_e(_short(low))}</text>'
               f'<text x="{width - right}" y="{row * len(rows) + 16}" text-anchor="end">{_e(_short(high))}</text>'
               "</svg>")
    return "".join(svg)


def _pct(value: Any) -> str:
    return "—" if value is None else f"{value:.2%}"


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
