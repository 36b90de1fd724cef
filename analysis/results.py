"""The values a run produces and hands from compare to gate to report."""
from __future__ import annotations

import dataclasses
from typing import Any

from analysis.diff import RecordDiff
from analysis.quarantine import OWNERS, owner_of
from analysis.segments import SegmentScan
from analysis.slices import Segment


@dataclasses.dataclass(frozen=True)
class Accounting:
    """Where every captured record ended: `captured == joined + quarantined` must hold."""

    captured: int
    joined: int
    quarantined: int
    by_reason: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def coverage(self) -> float:
        return self.joined / self.captured if self.captured else 0.0

    @property
    def by_owner(self) -> dict[str, int]:
        """Quarantined records by whose loss they are: capture, candidate, evaluation (each present, maybe 0)."""
        owners = dict.fromkeys(OWNERS, 0)
        for code, count in self.by_reason.items():
            owners[owner_of(code)] += count
        return owners

    @property
    def usable(self) -> int:
        """Captured records the capture did not spoil: what the candidate and the evaluation answer for."""
        return self.captured - self.by_owner["capture"]

    @property
    def candidate_coverage(self) -> float | None:
        """Joined / (joined + the candidate's own losses): capture and evaluation losses are not held against it."""
        asked = self.joined + self.by_owner["candidate"]
        return self.joined / asked if asked else None

    @property
    def evaluation_loss(self) -> float | None:
        """Share of usable records the evaluation itself lost (None when nothing was usable)."""
        return self.by_owner["evaluation"] / self.usable if self.usable > 0 else None

    @property
    def balanced(self) -> bool:
        return self.captured == self.joined + self.quarantined and sum(self.by_reason.values()) == self.quarantined


@dataclasses.dataclass(frozen=True)
class MetricValue:
    """One statistic for one slice of a run.

    Paired statistics (agreement, match rates) have only `value`. Per-model statistics
    (accuracy, mean score) also carry `production`, `candidate` and `delta = candidate - production`;
    their `value` is the candidate's.
    """

    name: str
    value: float | None
    slice: str = "all"
    production: float | None = None
    candidate: float | None = None
    delta: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    support: int = 0


@dataclasses.dataclass(frozen=True)
class Comparison:
    """What compare found: the metrics, plus the shapes a report draws and what the statistics rest on."""

    metrics: tuple[MetricValue, ...]
    flip_matrix: dict[str, dict[str, int]]
    """production label -> candidate label -> records."""
    score_delta: dict[str, float]
    """Summary of candidate - production score: mean, std, min, p01, p05, p50, p95, p99, max, mean_abs."""
    has_ground_truth: bool = False
    task: str | None = None
    """classification or regression: which quality metrics ground truth fed."""
    diff: RecordDiff | None = None
    """The typed diff: threshold crossings, one-side-only fields, the top changed records."""
    distributions: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Score histograms the report draws."""
    segments: tuple[Segment, ...] = ()
    """The slices and their support."""
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    """confidence, bootstrap_resamples, seed, min_slice_support: what the intervals rest on."""
    segment_scan: SegmentScan | None = None
    """Segments of every input feature and CustomAttributes key (compare.auto_segments): the flagged and the
    weakest; analysis.segments.judge_segments turns it into the gate's segment_quality check."""
    operational: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Latency and errors per side, pairing counts, the latency histogram (analysis.operational); {} when unmeasured."""

    def metric(self, name: str, slice: str = "all") -> MetricValue | None:
        return next((m for m in self.metrics if m.name == name and m.slice == slice), None)
