"""The report's "Latency and errors" section: per-side figures, the paired comparison, a latency plot, the checks."""
from __future__ import annotations

import html
import math
from typing import Any

from analysis.operational import OPERATIONAL_METRICS, QUANTILES

_COLOURS = {"candidate": "#1565c0", "production": "#ef6c00", "production_repeat": "#9e9e9e"}
_LABELS = {"candidate": "candidate", "production": "production", "production_repeat": "production again (noise)"}


def operational_section(operational: dict[str, Any], headline: dict[str, Any], checks: list[dict]) -> str:
    """HTML for the section; a short note when nothing was measured."""
    cloud = operational.get("cloud") or {}
    if not operational.get("sides") and not cloud:
        return ('<h2 id="operational">Latency and errors</h2><p class=muted>No invocations were measured '
                "(the replay ran elsewhere, or nothing was replayed).</p>")
    parts = ['<h2 id="operational">Latency and errors</h2>']
    if operational.get("sides"):
        parts += [_intro(operational), _sides_table(operational["sides"]), _comparison_table(headline),
                  "<h3>Latency per record</h3>" + _latency_plot(operational.get("histogram") or {})]
    judged = [c for c in checks if c.get("metric") in OPERATIONAL_METRICS]
    if judged:
        rows = "".join(f"<tr><td class=text>{_e(c['name'])}</td><td>{_e(c['severity'])}</td><td>{_e(c['outcome'])}"
                       f"</td><td class=text>{_e(c['reason'])}</td></tr>" for c in judged)
        parts.append("<h3>Operational checks</h3><table><tr><th>check</th><th>severity</th><th>outcome</th>"
                     f"<th>reason</th></tr>{rows}</table>")
    if cloud:
        parts.append(_cloud_table(cloud))
    return "".join(parts)


def _intro(operational: dict[str, Any]) -> str:
    pairing = operational.get("pairing") or {}
    settings = operational.get("settings") or {}
    candidate = pairing.get("candidate") or {}
    repeat = pairing.get("production_repeat") or {}
    text = ("<p>Measured by the local replay on this machine, one row per mini-batch sent. Batches are paired by "
            "replay file and first line: ")
    if candidate:
        text += (f"{candidate['paired']} batches went to both sides, {candidate['both_answered']} answered by both "
                 "(latency statistics use those). ")
    else:
        text += "production was not replayed, so nothing is paired. "
    if repeat:
        text += (f"Production's own spread (the noise reference) comes from {repeat['paired']} of its batches "
                 "replayed again in a fresh server: read a candidate ratio against that one, not against 1 (a "
                 "production-against-itself ratio far from 1 means the machine's load changed during the run). ")
    if settings:
        text += (f"Intervals: {settings.get('confidence')} paired bootstrap over batches "
                 f"({settings.get('resamples')} resamples, seed {settings.get('seed')}).")
    return text + "</p>"


def _sides_table(sides: dict[str, dict[str, Any]]) -> str:
    quantiles = " / ".join(f"p{q}" for q in QUANTILES)
    columns = [("invocations", "invocations", _int), ("records", "records_answered", _int),
               (f"ms per batch {quantiles}", "latency", None), (f"ms per record {quantiles}", "record_latency", None),
               ("records/s", "throughput_records_per_s", _num), ("error rate", "error_rate", _pct),
                ("timeout rate", "timeout_rate", _pct), ("failed batches", "failed_invocations", _int),
                ("retries", "retries", _int), ("start s", "server_start_seconds", _num),
                ("peak RSS MiB", "server_peak_rss_bytes", _mib)]
    head = "".join(f"<th>{_e(title)}</th>" for title, _, _ in columns)
    rows = []
    for side, values in sides.items():
        cells = "".join(f"<td class=num>{_e(show(values.get(key)) if show else _quantiles(values, key))}</td>"
                        for _, key, show in columns)
        rows.append(f"<tr><td>{_e(_LABELS.get(side, side))}</td>{cells}</tr>")
    note = ("<p class=muted>records/s: records per second of invocation time. Start and memory are unknown for a "
            "container given as a URL.</p>")
    return f"<table class=wide><tr><th>side</th>{head}</tr>{''.join(rows)}</table>{note}"


def _quantiles(values: dict[str, Any], kind: str) -> str:
    return " / ".join(_ms(values.get(f"p{q}_{kind}_s")) for q in QUANTILES)


def _comparison_table(headline: dict[str, Any]) -> str:
    names = [n for n in OPERATIONAL_METRICS if not n.startswith("replay_") and n in headline]
    if not names:
        return ""
    rows = []
    for name in names:
        m = headline[name]
        noise = headline.get(f"replay_{name}") or {}
        shown = m["value"] if m.get("delta") is None else m["delta"]
        interval = (f"[{_num(m['ci_low'])}, {_num(m['ci_high'])}]" if m.get("ci_low") is not None else "")
        reference = (f"{_num(noise.get('value'))} [{_num(noise.get('ci_low'))}, {_num(noise.get('ci_high'))}]"
                     if noise.get("value") is not None else "—")
        rows.append(f"<tr><td>{_e(name)}</td><td class=num>{_e(_num(m.get('production')))}</td>"
                    f"<td class=num>{_e(_num(m.get('candidate')))}</td><td class=num>{_e(_num(shown))}</td>"
                    f"<td class=interval>{_e(interval)}</td><td class=interval>{_e(reference)}</td>"
                    f"<td class=num>{m.get('support')}{' servers' if name.startswith('server_') else ''}</td></tr>")
    return ("<h3>Candidate against production</h3><p>Ratios are candidate / production (1 is no change); rates "
            "show candidate − production. The noise reference is the same ratio for production against itself.</p>"
            "<table><tr><th>metric</th><th>production</th><th>candidate</th><th>ratio or delta</th><th>interval</th>"
            f"<th>production vs itself</th><th>batches</th></tr>{''.join(rows)}</table>")


def _latency_plot(histogram: dict[str, Any]) -> str:
    """Share of records per latency bin (log scale), one outline per side."""
    edges, counts = histogram.get("edges_s") or [], histogram.get("counts") or {}
    if not edges or not counts:
        return "<p class=muted>No answered batches to plot.</p>"
    width, height, left, bottom = 640, 170, 40, 24
    bins = len(edges) - 1
    step = (width - left - 10) / bins
    shares = {side: [n / (sum(values) or 1) for n in values] for side, values in counts.items()}
    peak = max(max(v) for v in shares.values()) or 1.0
    svg = [f'<svg width="{width}" height="{height + bottom}" role="img" aria-label="latency per record">']
    for side, values in shares.items():
        points = []
        for i, share in enumerate(values):
            y = round(height - (height - 10) * share / peak, 1)
            points += [f"{left + i * step:.1f},{y}", f"{left + (i + 1) * step:.1f},{y}"]
        svg.append(f'<polyline fill="none" stroke="{_COLOURS.get(side, "#333")}" stroke-width="2" '
                   f'points="{" ".join(points)}"><title>{_e(_LABELS.get(side, side))}</title></polyline>')
    svg.append(f'<line x1="{left}" y1="{height}" x2="{width - 10}" y2="{height}" stroke="#999"/>')
    for i in range(0, bins + 1, max(bins // 5, 1)):
        anchor = "end" if i == bins else "start" if i == 0 else "middle"
        svg.append(f'<text x="{left + i * step:.1f}" y="{height + 16}" text-anchor="{anchor}">'
                   f"{_e(_ms(edges[i]))} ms</text>")
    svg.append("</svg>")
    legend = "".join(f'<span><i class="swatch" style="background:{_COLOURS.get(side, "#333")}"></i>'
                     f"{_e(_LABELS.get(side, side))}</span>" for side in shares)
    return (f'<div class="legend">{legend}</div>' + "".join(svg)
            + "<p class=muted>Share of each side's records by latency per record (log scale).</p>")


def _cloud_table(cloud: dict[str, Any]) -> str:
    jobs = cloud.get("jobs") or []
    rows = "".join(
        f"<tr><td>{_e(j.get('side'))}</td><td>{_e(j.get('group'))}</td><td class=code>{_e(j.get('job_name'))}</td>"
        f"<td>{_e(j.get('status'))}</td><td>{_e(j.get('instance_type'))} × {_e(j.get('instance_count'))}</td>"
        f"<td class=num>{_e(_num(j.get('duration_s')))}</td><td class=num>{_e(_num(j.get('model_latency_ms_avg')))}"
        f"</td><td class=num>{_e(_num(j.get('model_latency_ms_max')))}</td><td class=num>{_e(_int(j.get('invocations')))}"
        f"</td><td class=num>{_e(_int(j.get('invocation_4xx_errors')))}</td>"
        f"<td class=num>{_e(_int(j.get('invocation_5xx_errors')))}</td></tr>" for j in jobs)
    return ("<h3>In the cloud (Batch Transform)</h3><p>Batch Transform reports no per-record latency: these are "
            "each transform job's duration and resources, and its CloudWatch metrics. Per-batch latency, pairing "
            f"and the noise reference come only from the local replay.</p><p class=muted>{_e(cloud.get('note', ''))}"
            "</p><table><tr><th>side</th><th>group</th><th>job</th><th>status</th><th>instances</th><th>duration s</th>"
            "<th>ModelLatency avg ms</th><th>max ms</th><th>invocations</th><th>4XX</th><th>5XX</th></tr>"
            f"{rows}</table>")


def _ms(value: Any) -> str:
    return "—" if value is None else f"{value * 1000:.3g}"


def _mib(value: Any) -> str:
    return "—" if value is None else f"{value / 1048576:.1f}"


def _pct(value: Any) -> str:
    return "—" if value is None else f"{value:.2%}"


def _int(value: Any) -> str:
    return "—" if value is None else str(int(value))


def _num(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)
