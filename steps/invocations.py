"""What each replay invocation cost: recorded while replaying, stored with the run, read back by compare.

Per side and replay group, `replay/invocations/<side>/<group>.parquet` holds one row per mini-batch
sent (the shadow_invocations columns, docs/internals.md) and `<group>.server.json` the model
server's start time and peak memory. Sides: candidate, production, and production_repeat (a
sample of production's batches replayed again, steps/latency_noise.py: the noise reference).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.operational import Settings, compare_operational
from analysis.results import Comparison
from steps.backends.catalog import SCHEMAS
from steps.config import Config
from steps.transformer import Invocation, TransformResult

log = logging.getLogger("shadow_eval.invocations")

SCHEMA = SCHEMAS["shadow_invocations"]
FOLDER = Path("replay") / "invocations"
"""Below the run folder."""


@dataclasses.dataclass
class ServerStats:
    """One model server's life: how long it took to answer /ping, and its peak resident memory."""

    side: str
    group: str
    external: bool = False
    """A container given as a URL: not started here, so neither figure is known."""
    start_seconds: float | None = None
    peak_rss_bytes: int | None = None
    transform_seconds: float | None = None


class Measurements:
    """Collects one transform's invocations (thread-safe) and its server's figures, then writes them."""

    def __init__(self, side: str, group: str):
        self.side, self.group = side, group
        self.server = ServerStats(side, group, external=True)
        self._pid: int | None = None
        self._invocations: list[Invocation] = []
        self._lock = threading.Lock()

    def record(self, invocation: Invocation) -> None:
        """transformer.transform's on_invocation hook."""
        with self._lock:
            self._invocations.append(invocation)

    def server_started(self, url: Any, start_seconds: float) -> None:
        """A local model server answered /ping after start_seconds (unpacking the model included)."""
        self.server.external = False
        self.server.start_seconds = start_seconds
        self._pid = getattr(url, "pid", None)

    def server_finishing(self) -> None:
        """Read the server's peak memory while it still runs (a reaped process has no /proc entry)."""
        self.server.peak_rss_bytes = peak_rss_bytes(self._pid) if self._pid else None

    def rows(self, records_per_line: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
        """The shadow_invocations rows (without run_id) of what was recorded.

        records_per_line: per replay file, the captured records on each of its lines (a JSON document
        line holds several); without it, a line counts as one record.
        """
        with self._lock:
            invocations = list(self._invocations)
        return pd.DataFrame([_row(self.side, self.group, i, (records_per_line or {}).get(i.file))
                             for i in invocations], columns=SCHEMA.names)

    def write(self, run_dir: Path, result: TransformResult | None = None) -> Path:
        """Write this transform's rows and server figures; a resumed run keeps rows of files it did not resend."""
        target = Path(run_dir) / FOLDER / self.side / f"{self.group}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            files = {i.file for i in self._invocations}
        fresh = self.rows(records_per_line(Path(run_dir), self.group, files))
        if target.exists():
            earlier = pq.read_table(target).to_pandas()
            kept = earlier[~earlier["replay_file"].isin(files)]
            fresh = pd.concat([kept, fresh], ignore_index=True) if len(kept) else fresh
        fresh = fresh.sort_values(["replay_file", "first_line"], kind="stable")
        table = pa.Table.from_pandas(fresh, schema=SCHEMA, preserve_index=False)
        _replace(target, lambda path: pq.write_table(table, path))
        if result is not None:
            self.server.transform_seconds = round(result.seconds, 6)
        stats = json.dumps(dataclasses.asdict(self.server), indent=2, sort_keys=True)
        _replace(target.with_name(f"{self.group}.server.json"), lambda path: path.write_text(stats))
        return target


def peak_rss_bytes(pid: int) -> int | None:
    """VmHWM (the peak resident set) of a live process from /proc; None where there is no /proc."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def read_run(run_dir: Path) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Every side's invocation rows of a run, and its server figures (empty when nothing was measured)."""
    folder = Path(run_dir) / FOLDER
    parts = sorted(folder.glob("*/*.parquet"))
    frames = [pq.read_table(p).to_pandas() for p in parts]
    frame = (pd.concat(frames, ignore_index=True) if frames
             else SCHEMA.empty_table().to_pandas())
    servers = [json.loads(p.read_text()) for p in sorted(folder.glob("*/*.server.json"))]
    return frame, servers


def parts(run_dir: Path) -> list[Path]:
    """The run's invocation files, as publish hands them to the catalog."""
    return sorted((Path(run_dir) / FOLDER).glob("*/*.parquet"))


def records_per_line(run_dir: Path, group: str, files: set[str]) -> dict[str, np.ndarray]:
    """Per replay file of the group: captured records on each line (index line - 1), from prepare/records."""
    wanted = {f"{group}/{name}": name for name in files}
    counts: dict[str, dict[int, int]] = {}
    if not wanted:
        return {}
    for part in sorted((run_dir / "prepare" / "records").glob("*.parquet")):
        table = pq.read_table(part, columns=["replay_file", "replay_line"],
                              filters=[("replay_file", "in", sorted(wanted))])
        if not table.num_rows:
            continue
        grouped = table.group_by(["replay_file", "replay_line"]).aggregate([([], "count_all")])
        for name, line, count in zip(*(grouped.column(c).to_pylist()
                                       for c in ("replay_file", "replay_line", "count_all"))):
            per_file = counts.setdefault(wanted[name], {})
            per_file[line] = per_file.get(line, 0) + count
    out = {}
    for name, per_line in counts.items():
        lines = np.zeros(max(per_line), dtype=np.int64)
        for line, count in per_line.items():
            lines[line - 1] = count
        out[name] = lines
    return out


def _row(side: str, group: str, invocation: Invocation, per_line: np.ndarray | None) -> dict[str, Any]:
    latency, outcome = invocation.attempts[-1] if invocation.attempts else (None, "not_sent")
    lines = invocation.records
    if per_line is not None:
        records = int(per_line[invocation.first_record:invocation.first_record + lines].sum())
    else:
        records = lines
    errors = sum(1 for _, o in invocation.attempts if o != "ok")
    status = 200 if outcome == "ok" else (int(outcome[5:]) if outcome.startswith("http_") and outcome[5:].isdigit()
                                          else None)
    return {
        "side": side, "replay_group": group, "replay_file": invocation.file,
        "first_line": invocation.first_record + 1, "lines": lines, "records": records,
        "payload_bytes": invocation.payload_bytes, "response_bytes": invocation.response_bytes,
        "attempts": len(invocation.attempts), "retries": max(len(invocation.attempts) - 1, 0), "errors": errors,
        "timeouts": sum(1 for _, o in invocation.attempts if o == "timeout"),
        "http_status": status, "outcome": outcome, "latency_s": latency,
        "latency_per_record_s": latency / records if latency is not None and records else None,
        "elapsed_s": sum(seconds for seconds, _ in invocation.attempts),
        "started_at": dt.datetime.fromtimestamp(invocation.started_at, dt.timezone.utc),
    }


def _replace(target: Path, write) -> None:
    partial = target.with_name(f".{target.name}.partial")
    write(partial)
    partial.replace(target)


def with_operational(comparison: Comparison, config: Config, run_dir: Path) -> Comparison:
    """The comparison plus the run's operational metrics and summary (unchanged when nothing was measured)."""
    frame, servers = read_run(run_dir)
    settings = Settings(config.compare.bootstrap_resamples, config.compare.confidence, config.compare.seed)
    measured = compare_operational(frame, servers, settings)
    if not measured.metrics and not measured.summary:
        return comparison
    return dataclasses.replace(comparison, metrics=tuple(comparison.metrics) + measured.metrics,
                               operational={**comparison.operational, **measured.summary})
