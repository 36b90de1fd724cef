"""What a data-capture folder holds: files, calls, records, encodings, content types, quarantine.

Each line is parsed once and split into records the way prepare does with default knobs; files
are streamed, and spread over a process pool when there are many of them.
"""
from __future__ import annotations

import collections
import concurrent.futures
import datetime as dt
import multiprocessing
import os
from pathlib import Path
from typing import Any

from analysis.capture import CallRecordsError, call_records
from steps.capture_files import CaptureFile, Window, list_capture_files, read_capture_file

# Below these a pool costs more (worker start-up) than it saves.
_POOL_MIN_FILES = 8
_POOL_MIN_BYTES = 8 * 1024 * 1024


def collect(root: str | Path, endpoint: str | None = None, variant: str | None = None,
            window_start: dt.datetime | None = None, window_end: dt.datetime | None = None, *,
            instances_path: str | None = "instances", output_records_path: str | None = "predictions",
            processes: int | None = None) -> dict[str, Any]:
    """Statistics of the capture files under root in [window_start, window_end), as plain JSON-able data.

    `processes` caps the worker pool (default: all cores when the folder is large; 1 = in-process).
    """
    window = Window(window_start, window_end)
    listing = list_capture_files(root, endpoint, variant, window)
    jobs = [(file, window, instances_path, output_records_path) for file in listing.files]
    workers = processes or os.cpu_count() or 1
    total_bytes = sum(file.path.stat().st_size for file in listing.files)
    if workers > 1 and len(jobs) >= _POOL_MIN_FILES and total_bytes >= _POOL_MIN_BYTES:
        # Not fork: the caller may hold threads (DuckDB, logging) whose locks fork would copy mid-state.
        context = multiprocessing.get_context("forkserver" if "forkserver" in multiprocessing.get_all_start_methods()
                                              else "spawn")
        with concurrent.futures.ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
            parts = list(pool.map(_file_stats, jobs, chunksize=max(1, len(jobs) // (workers * 4))))
    else:
        parts = [_file_stats(job) for job in jobs]
    stats = _merge(parts)
    stats["files"] = len(listing.files)
    stats["misfits"] = [{"path": m.relative, "problem": m.problem} for m in listing.misfits]
    stats["window"] = {"start": _iso(window_start), "end": _iso(window_end)}
    return stats


def render_text(stats: dict[str, Any]) -> str:
    """A human summary of collect()'s result."""
    lines = [
        f"files: {stats['files']}   calls: {stats['calls']}   records: {stats['records']}"
        f"   quarantined: {stats['quarantined']}   out of window: {stats['out_of_window']} calls",
        f"window: {stats['window']['start'] or '-'} .. {stats['window']['end'] or '-'}"
        f"   inference times seen: {stats['time_range']['first'] or '-'} .. {stats['time_range']['last'] or '-'}",
        f"endpoints: {_inline(stats['endpoints'])}",
        f"variants: {_inline(stats['variants'])}",
    ]
    for side in ("input", "output"):
        lines.append(f"{side} encodings: {_inline(stats['encodings'][side])}")
        lines.append(f"{side} content types: {_inline(stats['content_types'][side])}")
    if stats["quarantine_reasons"]:
        lines.append("quarantined records by reason:")
        width = max(map(len, stats["quarantine_reasons"]))
        lines += [f"  {code:<{width}}  {count}" for code, count in sorted(stats["quarantine_reasons"].items())]
    if stats["misfits"]:
        lines.append(f"paths off the <endpoint>/<variant>/yyyy/mm/dd/hh/<file> layout (not read): "
                     f"{len(stats['misfits'])}")
        lines += [f"  {m['path']}: {m['problem']}" for m in stats["misfits"][:20]]
    return "\n".join(lines)


def _file_stats(job: tuple[CaptureFile, Window, str | None, str | None]) -> dict[str, Any]:
    """Counters for one file (runs in a worker; returns plain data)."""
    file, window, instances_path, output_records_path = job
    counts: collections.Counter = collections.Counter()
    reasons: collections.Counter = collections.Counter()
    sides = {key: {"input": collections.Counter(), "output": collections.Counter()}
             for key in ("encodings", "content_types")}
    first = last = None
    for line in read_capture_file(file, window):
        if not line.in_window:
            counts["out_of_window"] += 1
            continue
        counts["calls"] += 1
        if line.error is not None:
            reasons[line.error.code] += 1
            continue
        call = line.call
        if call.inference_time is not None:
            first = min(first or call.inference_time, call.inference_time)
            last = max(last or call.inference_time, call.inference_time)
        for side, payload in (("input", call.input), ("output", call.output)):
            sides["encodings"][side][payload.encoding] += 1
            sides["content_types"][side][payload.content_type or "(none)"] += 1
        try:
            counts["records"] += len(call_records(call, "auto", instances_path, output_records_path).records)
        except CallRecordsError as exc:
            reasons[exc.code] += exc.record_count
    return {"counts": counts, "reasons": reasons, "sides": sides, "first": first, "last": last,
            "endpoint": file.endpoint, "variant": f"{file.endpoint}/{file.variant}"}


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    counts: collections.Counter = collections.Counter()
    reasons: collections.Counter = collections.Counter()
    sides = {key: {"input": collections.Counter(), "output": collections.Counter()}
             for key in ("encodings", "content_types")}
    endpoints: collections.Counter = collections.Counter()
    variants: collections.Counter = collections.Counter()
    times = []
    for part in parts:
        counts.update(part["counts"])
        reasons.update(part["reasons"])
        for key, by_side in part["sides"].items():
            for side, counter in by_side.items():
                sides[key][side].update(counter)
        endpoints[part["endpoint"]] += 1
        variants[part["variant"]] += 1
        times += [t for t in (part["first"], part["last"]) if t is not None]
    quarantined = sum(reasons.values())
    return {
        "calls": counts["calls"],
        "records": counts["records"] + quarantined,
        "quarantined": quarantined,
        "quarantine_reasons": dict(sorted(reasons.items())),
        "out_of_window": counts["out_of_window"],
        "encodings": {side: dict(counter) for side, counter in sides["encodings"].items()},
        "content_types": {side: dict(counter) for side, counter in sides["content_types"].items()},
        "time_range": {"first": _iso(min(times)) if times else None, "last": _iso(max(times)) if times else None},
        "endpoints": dict(sorted(endpoints.items())),
        "variants": dict(sorted(variants.items())),
    }


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _inline(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counts.items(), key=lambda kv: -kv[1])) or "-"
