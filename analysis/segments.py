"""Segments no config names: every input column or field and every CustomAttributes key, judged together.

Each feature (a CSV column `col_3`, a JSON path `customer.country`, a header key `attr:client`) cuts
the records into segments: a numeric feature into quantile bins (`[6,24)`), a categorical one into
its most frequent values plus `other`; missing values are a segment of their own. Per segment only
additive evidence is kept, so parts merge by addition and memory grows with segments, not records:

* classification: records with ground truth, each model right, and the discordant pairs
  (production right and candidate wrong = b, the reverse = c); delta = (c - b) / n;
* regression: sums of both models' absolute errors, their squares and cross product.

A segment credibly worse than production beyond the margin is flagged: one-sided tests of
H0 "the candidate loses at most the margin here" (classification: Tango's score test for a paired
difference of proportions; regression: a z-test on |candidate error| - (1 + margin) |production error|),
then Benjamini-Hochberg over every tested segment of every feature. BH rather than Holm: with no
segment truly worse, any flag is a false one and BH then bounds the chance of any flag by alpha,
exactly the false-reject rate that matters; with hundreds of features x several segments Holm's
family-wise bound would leave little power to find the segment that is really worse. (BH assumes
positive dependence, which overlapping segments of the same records give.)

Approximations, bounded on purpose: quantile edges come from the first SAMPLE_RECORDS records that
carry the feature (rounded to 3 significant digits so the labels are exact); a categorical feature
counts its first MAX_DISTINCT_VALUES distinct values exactly and pools later new ones into `other`;
at most max_segment_features features (first seen first kept); in a numeric feature the few values
that are not numbers (`?`, `n/a`) count as missing. Inputs kept only as a hash (tables.input_text:
hash or drop) give no input features, only CustomAttributes keys.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pandas as pd

from analysis.canonical import number_from_text
from analysis.features import input_features, number_text, text_column
from analysis.statistics import normal_cdf, normal_quantile, wilson_interval

MISSING = "missing"
OTHER = "other"
SAMPLE_RECORDS = 10_000
"""Records whose numeric values fix a feature's quantile edges (the first ones that carry it)."""
MAX_DISTINCT_VALUES = 1000
"""Distinct values a categorical feature counts exactly; later new values are pooled into `other`."""
LISTED = 10
"""Weakest segments a scan keeps besides the flagged ones."""
MAX_FLAGGED_LISTED = 50
CHECK_NAME = "segment_quality"
CORRECTION = "Benjamini-Hochberg"

# One bit per record fact; a record's pattern of bits is its outcome class.
_LABELLED, _FLIP, _CHANGED, _TRUTH_LABEL, _P_RIGHT, _C_RIGHT, _TRUTH_NUMBER = (1 << k for k in range(7))
# Regression sums per segment: production |error|, candidate |error|, their squares and product.
_SUMS = ("p", "c", "pp", "cc", "pc")


@dataclasses.dataclass(frozen=True)
class SegmentSettings:
    """The CompareConfig fields segment finding reads (steps.config owns the defaults)."""

    auto_segments: bool
    segment_bins: int
    segment_top_values: int
    max_segment_features: int
    segment_accuracy_margin: float
    segment_mae_margin: float
    segment_alpha: float
    min_slice_support: int
    confidence: float

    @classmethod
    def of(cls, config: Any) -> "SegmentSettings":
        """The settings; a margin left None is the gate policy's default (steps.compare passes the configured one)."""
        values = {f.name: getattr(config, f.name) for f in dataclasses.fields(cls)}
        for key, default in _POLICY_MARGINS.items():
            if values[key] is None:
                values[key] = default
        return cls(**values)


_POLICY_MARGINS = {"segment_accuracy_margin": 0.01, "segment_mae_margin": 0.05}
"""gate.policy's default accuracy_margin and mae_margin: a segment is judged on the margin the whole run is."""


@dataclasses.dataclass(frozen=True)
class SegmentEvidence:
    """One segment of one feature: its support, both models' quality, the paired delta and its test.

    delta is candidate - production in the metric's units (accuracy share, MAE, flip rate) with its
    two-sided interval; change is the same delta where negative means worse, in the margin's units
    (accuracy points; regression: -(MAE delta) / production MAE). p tests "worse by more than the
    margin"; p_adjusted is Benjamini-Hochberg over every tested segment. No ground truth: p is None.
    """

    feature: str
    segment: str
    support: int
    """Records in the segment."""
    labelled: int
    """Records the metric is computed over (ground truth and both answers)."""
    metric: str
    production_quality: float | None
    candidate_quality: float | None
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    change: float | None
    change_low: float | None
    change_high: float | None
    p: float | None
    p_adjusted: float | None
    flagged: bool

    @property
    def name(self) -> str:
        return f"{self.feature}={self.segment}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, **dataclasses.asdict(self)}


@dataclasses.dataclass(frozen=True)
class SegmentScan:
    """What automatic segmenting found: the family it tested and the segments worth showing."""

    metric: str | None
    """accuracy, mae, label_flip_rate or answer_change_rate (the last two: no ground truth, informational)."""
    margin: float | None
    alpha: float
    correction: str
    features: int
    features_skipped: int
    """Features past max_segment_features, not segmented."""
    segments: int
    tested: int
    flagged: int
    listed: tuple[SegmentEvidence, ...]
    """Every flagged segment (up to MAX_FLAGGED_LISTED), then the weakest others (up to LISTED)."""

    def to_json(self) -> dict[str, Any]:
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "listed"},
                "listed": [segment.to_json() for segment in self.listed]}


@dataclasses.dataclass(frozen=True)
class SegmentJudgement:
    """The gate check `segment_quality` (critical): fields as analysis.gate.CheckResult names them.

    passed None: not judged (no ground truth, or no segment with the minimum support); the gate then
    treats it like any check whose metric could not be computed.
    """

    name: str
    metric: str
    value: float | None
    """The weakest segment's change (negative: worse), in the margin's units."""
    threshold: float | None
    """-margin."""
    direction: str
    severity: str
    passed: bool | None
    reason: str
    estimate: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    flagged: tuple[SegmentEvidence, ...] = ()
    weakest: SegmentEvidence | None = None


def judge_segments(scan: SegmentScan | None) -> SegmentJudgement:
    """Fail when a segment is credibly worse than production beyond the margin (after the scan's BH control)."""
    metric = (scan.metric if scan else None) or "segments"
    threshold = -scan.margin if scan is not None and scan.margin is not None else None
    base = dict(name=CHECK_NAME, metric=metric, direction="at_least", severity="critical", threshold=threshold)
    if scan is None or scan.margin is None:
        return SegmentJudgement(**base, value=None, passed=None,
                                reason="segments not judged: no ground truth for a quality metric")
    if not scan.tested:
        return SegmentJudgement(**base, value=None, passed=None,
                                reason=f"segments not judged: none of {scan.segments} segments of {scan.features} "
                                       "features has the minimum support")
    flagged = tuple(s for s in scan.listed if s.flagged)
    weakest = flagged[0] if flagged else scan.listed[0]
    family = f"{_correction_short(scan)} over {scan.tested} segments"
    values = dict(value=weakest.change, estimate=weakest.change, ci_low=weakest.change_low,
                  ci_high=weakest.change_high, flagged=flagged, weakest=weakest)
    if flagged:
        more = f"; {scan.flagged - 1} more flagged" if scan.flagged > 1 else ""
        return SegmentJudgement(**base, **values, passed=False,
                                reason=f"{describe(weakest)} ({family}){more}: worse than production beyond "
                                       f"the margin {_margin_text(scan)}")
    return SegmentJudgement(**base, **values, passed=True,
                            reason=f"no segment credibly worse beyond the margin {_margin_text(scan)} ({family}); "
                                   f"weakest {describe(weakest)}")


def describe(evidence: SegmentEvidence) -> str:
    """`attr:channel=mobile: accuracy -8.1 points [-11.2, -5.0], p_adj 0.0003`."""
    if evidence.metric == "accuracy":
        text = (f"accuracy {_points(evidence.delta)} points [{_points(evidence.ci_low)}, {_points(evidence.ci_high)}] "
                f"({_share(evidence.production_quality)} -> {_share(evidence.candidate_quality)})")
    elif evidence.metric == "mae":
        text = (f"MAE {_percent(_negated(evidence.change))} [{_percent(_negated(evidence.change_high))}, "
                f"{_percent(_negated(evidence.change_low))}] ({_share(evidence.production_quality)} -> "
                f"{_share(evidence.candidate_quality)})")
    else:
        text = f"{evidence.metric} {_share(evidence.delta)} [{_share(evidence.ci_low)}, {_share(evidence.ci_high)}]"
    text = f"{evidence.name}: {text}, n {evidence.labelled}"
    return text + (f", p_adj {evidence.p_adjusted:.2g}" if evidence.p_adjusted is not None else "")


class SegmentEvidenceBuilder:
    """Per-segment evidence over joined records that arrive part by part (shadow_records columns).

    add() reads input_text, custom_attributes, both labels and scores, both hashes and the ground
    truth; finish(task) turns the counts into a SegmentScan once compare knows the task.
    """

    def __init__(self, config: Any):
        self.settings = SegmentSettings.of(config)
        self.records = 0
        self._features: dict[str, _Feature] = {}
        self._skipped: set[str] = set()
        self._patterns: dict[int, int] = {}
        self._pending: list[tuple[dict[str, np.ndarray], _Outcomes]] = []
        self._pending_records = 0
        self._sampled = False
        self._totals = _Tally()

    def add(self, frame: pd.DataFrame) -> None:
        """The next part's records."""
        if not self.settings.auto_segments or not len(frame):
            return
        outcomes = self._outcomes(frame)
        self._totals.add(np.zeros(len(frame), dtype=np.int64), outcomes)
        self.records += len(frame)
        unsettled: dict[str, np.ndarray] = {}
        for name, values in input_features(frame).items():
            feature = self._feature(name)
            if feature is None:
                continue
            if feature.kind is None and values.dtype == object:
                feature.kind = "categorical"  # text values: no edges to wait for
            if feature.kind is None:
                unsettled[name] = values
            else:
                feature.tally(values, outcomes)
        if self._sampled:
            for name, values in unsettled.items():
                self._features[name].settle([values], self.settings)
                self._features[name].tally(values, outcomes)
            return
        if unsettled:
            self._pending.append((unsettled, outcomes))
        self._pending_records += len(frame)
        if self._pending_records >= SAMPLE_RECORDS:
            self._settle_pending()

    def finish(self, task: str | None) -> SegmentScan:
        """Every feature's segments judged for `task` (classification, regression, or None: no ground truth)."""
        settings = self.settings
        self._settle_pending()
        rows: list[tuple[str, str, np.ndarray, np.ndarray, bool]] = []
        for feature in self._features.values():
            segments = feature.segments(self._totals, settings.segment_top_values, len(self._patterns))
            several = sum(1 for _, counts, _ in segments if counts.sum()) >= 2  # one segment is the whole run
            rows += [(feature.name, label, counts, sums, several) for label, counts, sums in segments if counts.sum()]
        patterns = np.zeros(len(self._patterns), dtype=np.int64)
        for pattern, column in self._patterns.items():
            patterns[column] = pattern
        metric, margin, evidence, tested = _evidence(rows, patterns, task, settings)
        flagged = sorted((e for e in evidence if e.flagged), key=_weakness)
        others = sorted((e for e in evidence if not e.flagged and (e.p is not None or e.delta is not None)),
                        key=_weakness)
        return SegmentScan(metric=metric, margin=margin, alpha=settings.segment_alpha, correction=CORRECTION,
                           features=len(self._features), features_skipped=len(self._skipped), segments=len(rows),
                           tested=tested, flagged=len(flagged),
                           listed=tuple(flagged[:MAX_FLAGGED_LISTED] + others[:LISTED]))

    def _feature(self, name: str) -> _Feature | None:
        feature = self._features.get(name)
        if feature is None and name not in self._skipped:
            if len(self._features) >= self.settings.max_segment_features:
                self._skipped.add(name)
                return None
            feature = self._features[name] = _Feature(name)
        return feature

    def _settle_pending(self) -> None:
        self._sampled = True
        names = dict.fromkeys(name for columns, _ in self._pending for name in columns)
        for name in names:
            if self._features[name].kind is None:  # not already categorical by a later part's text values
                samples = [columns[name] for columns, _ in self._pending if name in columns]
                self._features[name].settle(samples, self.settings)
        for columns, outcomes in self._pending:
            for name, values in columns.items():
                self._features[name].tally(values, outcomes)
        self._pending.clear()

    def _outcomes(self, frame: pd.DataFrame) -> _Outcomes:
        """Each record's outcome class (a column of the tallies) and its regression errors."""
        p_label, c_label = text_column(frame, "production_label"), text_column(frame, "candidate_label")
        truth = text_column(frame, "ground_truth_label")
        p_hash, c_hash = text_column(frame, "production_hash"), text_column(frame, "candidate_hash")
        labelled = pd.notna(p_label) & pd.notna(c_label)
        has_truth = labelled & pd.notna(truth)
        exact = pd.notna(p_hash) & (p_hash == c_hash)
        bits = (labelled * _LABELLED | (labelled & (p_label != c_label)) * _FLIP | ~exact * _CHANGED
                | has_truth * _TRUTH_LABEL | (has_truth & (p_label == truth)) * _P_RIGHT
                | (has_truth & (c_label == truth)) * _C_RIGHT).astype(np.int64)
        regression = None
        if pd.notna(truth).any():
            numbers = {value: _number(value) for value in pd.unique(truth[pd.notna(truth)])}
            value = np.array([numbers.get(t, np.nan) if t is not None else np.nan for t in truth], dtype=float)
            p_score, c_score = _numeric(frame, "production_score"), _numeric(frame, "candidate_score")
            scored = np.isfinite(value) & np.isfinite(p_score) & np.isfinite(c_score)
            if scored.any():
                bits |= scored * _TRUTH_NUMBER
                p_err = np.where(scored, np.abs(p_score - value), 0.0)
                c_err = np.where(scored, np.abs(c_score - value), 0.0)
                regression = np.stack([p_err, c_err, p_err * p_err, c_err * c_err, p_err * c_err])
        present, local = np.unique(bits, return_inverse=True)
        columns = np.array([self._patterns.setdefault(int(p), len(self._patterns)) for p in present], dtype=np.int64)
        return _Outcomes(columns[local.reshape(-1)], len(self._patterns), regression)


@dataclasses.dataclass
class _Outcomes:
    column: np.ndarray
    """Per record: its outcome class's column in the tallies."""
    width: int
    regression: np.ndarray | None
    """_SUMS x records, or None when no record has numeric truth and both scores."""


class _Tally:
    """Counts per (segment code, outcome class) and regression sums per segment code; grows as needed."""

    def __init__(self):
        self.counts = np.zeros((0, 0), dtype=np.int64)
        self.sums = np.zeros((0, len(_SUMS)))

    def add(self, codes: np.ndarray, outcomes: _Outcomes) -> None:
        rows = int(codes.max(initial=-1)) + 1
        width = outcomes.width
        if rows > self.counts.shape[0] or width > self.counts.shape[1]:
            grown = np.zeros((max(rows, self.counts.shape[0]), max(width, self.counts.shape[1])), dtype=np.int64)
            grown[:self.counts.shape[0], :self.counts.shape[1]] = self.counts
            self.counts = grown
            sums = np.zeros((grown.shape[0], len(_SUMS)))
            sums[:self.sums.shape[0]] = self.sums
            self.sums = sums
        self.counts[:rows, :width] += np.bincount(codes * width + outcomes.column,
                                                  minlength=rows * width).reshape(rows, width)
        if outcomes.regression is not None:
            for j, weights in enumerate(outcomes.regression):
                self.sums[:rows, j] += np.bincount(codes, weights=weights, minlength=rows)

    def row(self, code: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        counts = np.zeros(width, dtype=np.int64)
        sums = np.zeros(len(_SUMS))
        if code < self.counts.shape[0]:
            counts[:self.counts.shape[1]] = self.counts[code]
            sums[:] = self.sums[code]
        return counts, sums


class _Feature:
    """One feature's segmentation rule (numeric edges or categorical values) and its tallies."""

    def __init__(self, name: str):
        self.name = name
        self.kind: str | None = None
        self.edges = np.zeros(0)
        self.values: dict[str, int] = {MISSING: 0, OTHER: 1}
        self.tally_ = _Tally()

    def settle(self, samples: list[np.ndarray], settings: SegmentSettings) -> None:
        """numeric (quantile bins) when the sample has more distinct numbers than top values, else categorical."""
        finite = np.sort(np.concatenate([s[np.isfinite(s)] for s in samples])[:SAMPLE_RECORDS])
        distinct = int(np.count_nonzero(finite[1:] != finite[:-1])) + 1 if finite.size else 0
        if distinct > settings.segment_top_values:
            positions = np.linspace(0, 1, settings.segment_bins + 1)[1:-1] * (finite.size - 1)
            quantiles = np.interp(positions, np.arange(finite.size), finite)  # linear, as np.quantile's default
            edges = np.unique([_significant(q, 3) for q in quantiles])
            edges = edges[(edges > finite[0]) & (edges <= finite[-1])]
            if edges.size:
                self.kind, self.edges = "numeric", edges
                return
        self.kind = "categorical"

    def tally(self, values: np.ndarray, outcomes: _Outcomes) -> None:
        self.tally_.add(self._codes(values), outcomes)

    def _codes(self, values: np.ndarray) -> np.ndarray:
        if self.kind == "numeric":
            numbers = values if values.dtype != object else pd.to_numeric(pd.Series(values), errors="coerce") \
                .to_numpy(float, na_value=np.nan)
            codes = np.searchsorted(self.edges, numbers, side="right").astype(np.int64) + 1
            codes[~np.isfinite(numbers)] = 0
            return codes
        if values.dtype != object:
            finite = np.isfinite(values)
            distinct, inverse = np.unique(values[finite], return_inverse=True)
            codes = np.zeros(values.size, dtype=np.int64)
            mapping = np.array([self._code(number_text(v)) for v in distinct], dtype=np.int64)
            codes[finite] = mapping[inverse.reshape(-1)] if distinct.size else 0
            return codes
        local, distinct = pd.factorize(values, use_na_sentinel=True)
        mapping = np.array([self._code(str(v)) for v in distinct] + [0], dtype=np.int64)  # -1 (missing) -> 0
        return mapping[local]

    def _code(self, value: str) -> int:
        code = self.values.get(value)
        if code is None:
            if len(self.values) >= MAX_DISTINCT_VALUES + 2:
                return 1
            code = self.values[value] = len(self.values)
        return code

    def segments(self, totals: _Tally, top_values: int, width: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """(label, outcome counts, regression sums) per segment; records without the feature are `missing`."""
        rows = []
        if self.kind == "numeric":
            labels = [MISSING] + [_bin_label(k, self.edges) for k in range(self.edges.size + 1)]
            rows = [[label, *self.tally_.row(code, width)] for code, label in enumerate(labels)]
        elif self.kind == "categorical":
            values = [(value, *self.tally_.row(code, width)) for value, code in self.values.items()]
            named = sorted((v for v in values[2:] if v[1].sum()), key=lambda v: (-v[1].sum(), v[0]))
            rows = [[MISSING, values[0][1], values[0][2]]] + [list(v) for v in named[:top_values]]
            other_counts = values[1][1] + sum((v[1] for v in named[top_values:]), np.zeros(width, dtype=np.int64))
            other_sums = values[1][2] + sum((v[2] for v in named[top_values:]), np.zeros(len(_SUMS)))
            rows.append([OTHER, other_counts, other_sums])
        if not rows:
            rows = [[MISSING, np.zeros(width, dtype=np.int64), np.zeros(len(_SUMS))]]
        all_counts, all_sums = totals.row(0, width)
        rows[0][1] = rows[0][1] + all_counts - sum(r[1] for r in rows)  # records in parts without the feature
        rows[0][2] = rows[0][2] + all_sums - sum(r[2] for r in rows)
        return [(label, counts, sums) for label, counts, sums in rows[1:] + rows[:1]]


# ---------------------------------------------------------------- statistics over segments

def _evidence(rows: list, patterns: np.ndarray, task: str | None, settings: SegmentSettings) \
        -> tuple[str | None, float | None, list[SegmentEvidence], int]:
    """(metric, margin, every segment's evidence, segments tested) for the task; margin None: informational."""
    if not rows:
        return ({"classification": "accuracy", "regression": "mae"}.get(task or ""),
                {"classification": settings.segment_accuracy_margin,
                 "regression": settings.segment_mae_margin}.get(task or ""), [], 0)
    counts = np.array([r[2] for r in rows], dtype=np.int64)
    sums = np.array([r[3] for r in rows], dtype=float)
    several = np.array([r[4] for r in rows], dtype=bool)

    def having(bits_on: int, bits_off: int = 0) -> np.ndarray:
        mask = ((patterns & bits_on) == bits_on) & ((patterns & bits_off) == 0)
        return counts[:, mask].sum(axis=1)

    support = counts.sum(axis=1)
    z = normal_quantile(1 - (1 - settings.confidence) / 2)
    fields: dict[str, np.ndarray | list] = {}
    if task == "classification":
        n = having(_TRUTH_LABEL)
        b, c = having(_P_RIGHT, _C_RIGHT), having(_C_RIGHT, _P_RIGHT)
        margin = settings.segment_accuracy_margin
        safe = np.maximum(n, 1)
        delta = (c - b) / safe
        low, high = paired_difference_interval(n, c, b, z)
        p = _normal_cdf(paired_difference_z(n, c, b, -margin))
        fields = dict(labelled=n, production=having(_P_RIGHT) / safe, candidate=having(_C_RIGHT) / safe,
                      delta=delta, low=low, high=high, change=delta, change_low=low, change_high=high, p=p)
        metric = "accuracy"
    elif task == "regression":
        n = having(_TRUTH_NUMBER)
        margin = settings.segment_mae_margin
        safe = np.maximum(n, 1)
        p_mae, c_mae = sums[:, 0] / safe, sums[:, 1] / safe
        delta = c_mae - p_mae
        d_sq = sums[:, 3] - 2 * sums[:, 4] + sums[:, 2]
        se = np.sqrt(np.maximum(d_sq - n * delta ** 2, 0) / np.maximum(n - 1, 1) / safe)
        scale = 1 + margin  # H0: candidate MAE <= (1 + margin) production MAE
        e_mean = (sums[:, 1] - scale * sums[:, 0]) / safe
        e_sq = sums[:, 3] - 2 * scale * sums[:, 4] + scale ** 2 * sums[:, 2]
        e_se = np.sqrt(np.maximum(e_sq - n * e_mean ** 2, 0) / np.maximum(n - 1, 1) / safe)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(e_se > 0, e_mean / np.where(e_se > 0, e_se, 1), np.where(e_mean > 0, np.inf, -np.inf))
            relative = np.where(p_mae > 0, p_mae, np.nan)
        p = 1 - _normal_cdf(t)
        fields = dict(labelled=n, production=p_mae, candidate=c_mae, delta=delta, low=delta - z * se,
                      high=delta + z * se, change=-delta / relative, change_low=-(delta + z * se) / relative,
                      change_high=-(delta - z * se) / relative, p=p)
        metric = "mae"
    else:
        labelled = having(_LABELLED)
        flips = having(_LABELLED | _FLIP)
        use_labels = labelled.sum() > 0
        n = labelled if use_labels else support
        hits = flips if use_labels else having(_CHANGED)
        intervals = [wilson_interval(int(k), int(m), settings.confidence) for k, m in zip(hits, n)]
        fields = dict(labelled=n, production=[None] * len(rows), candidate=[None] * len(rows),
                      delta=[i.estimate for i in intervals], low=[i.low for i in intervals],
                      high=[i.high for i in intervals], change=[None] * len(rows), change_low=[None] * len(rows),
                      change_high=[None] * len(rows), p=[None] * len(rows))
        metric = "label_flip_rate" if use_labels else "answer_change_rate"
        margin = None
    tested = several & (np.asarray(fields["labelled"]) >= max(settings.min_slice_support, 1))
    p_values = np.asarray(fields["p"], dtype=float) if margin is not None else np.full(len(rows), np.nan)
    adjusted = np.full(len(rows), np.nan)
    if margin is not None and tested.any():
        adjusted[tested] = benjamini_hochberg(p_values[tested])
    out = []
    for k, (feature, label, _, _, _) in enumerate(rows):
        judged = margin is not None and bool(tested[k])
        informational = margin is None and bool(tested[k])

        def value(name: str) -> float | None:
            v = fields[name][k]
            return None if v is None or not (judged or informational) or not math.isfinite(v) else float(v)

        out.append(SegmentEvidence(
            feature=feature, segment=label, support=int(support[k]), labelled=int(fields["labelled"][k]),
            metric=metric, production_quality=value("production"), candidate_quality=value("candidate"),
            delta=value("delta"), ci_low=value("low"), ci_high=value("high"), change=value("change"),
            change_low=value("change_low"), change_high=value("change_high"),
            p=float(p_values[k]) if judged else None, p_adjusted=float(adjusted[k]) if judged else None,
            flagged=judged and bool(adjusted[k] <= settings.segment_alpha)))
    return metric, margin, out, int(tested.sum())


def paired_difference_z(n, n12, n21, delta0) -> np.ndarray:
    """Tango's score statistic for H0: p12 - p21 = delta0 in a paired 2x2 table (n12, n21 discordant).

    Here n12 = records only the candidate got right, n21 = only production: p12 - p21 is the accuracy
    delta. The variance is taken at the restricted maximum-likelihood p21 (closed form, Tango 1998).
    """
    n, n12, n21 = (np.asarray(x, dtype=float) for x in (n, n12, n21))
    delta0 = np.asarray(delta0, dtype=float)
    a = 2 * n
    b = -n12 - n21 + (2 * n - n12 + n21) * delta0
    c = -n21 * delta0 * (1 - delta0)
    with np.errstate(divide="ignore", invalid="ignore"):
        p21 = (np.sqrt(np.maximum(b * b - 4 * a * c, 0)) - b) / (2 * np.where(a > 0, a, 1))
        variance = n * (2 * p21 + delta0 * (1 - delta0))
        z = (n12 - n21 - n * delta0) / np.sqrt(np.maximum(variance, 1e-300))
    return np.where(n > 0, z, 0.0)


def paired_difference_interval(n, n12, n21, z: float) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided score interval for p12 - p21 (Tango's statistic inverted; bisection, per segment)."""
    n = np.asarray(n, dtype=float)
    low_lo, low_hi = np.full(n.shape, -1.0), np.full(n.shape, 1.0)
    high_lo, high_hi = low_lo.copy(), low_hi.copy()
    for _ in range(60):  # Z decreases in delta0: the lower end solves Z = z, the upper Z = -z
        mid = (low_lo + low_hi) / 2
        above = paired_difference_z(n, n12, n21, mid) > z
        low_lo, low_hi = np.where(above, mid, low_lo), np.where(above, low_hi, mid)
        mid = (high_lo + high_hi) / 2
        above = paired_difference_z(n, n12, n21, mid) > -z
        high_lo, high_hi = np.where(above, mid, high_lo), np.where(above, high_hi, mid)
    empty = n <= 0
    return np.where(empty, np.nan, (low_lo + low_hi) / 2), np.where(empty, np.nan, (high_lo + high_hi) / 2)


def benjamini_hochberg(p_values) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (step-up, monotone, capped at 1), in the input order."""
    p = np.asarray(p_values, dtype=float)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    return adjusted


def _weakness(evidence: SegmentEvidence) -> tuple:
    """Most credibly worse first: adjusted p, then the change (or, informational, the highest rate)."""
    if evidence.p is not None:
        return (0, evidence.p_adjusted, evidence.p, evidence.change if evidence.change is not None else 0.0,
                evidence.name)
    return (1, 0.0, 0.0, -(evidence.delta or 0.0), evidence.name)


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    return np.array([normal_cdf(float(v)) for v in np.ravel(x)]).reshape(np.shape(x))


def _number(text: str) -> float:
    number = number_from_text(text)
    return float(number) if number is not None else np.nan


def _numeric(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name not in frame:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(float, na_value=np.nan)


def _significant(value: float, digits: int) -> float:
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - int(math.floor(math.log10(abs(value)))))


def _bin_label(k: int, edges: np.ndarray) -> str:
    """Bin k of 0..len(edges): `<a`, `[a,b)`, `>=b`, as analysis.slices labels configured bins."""
    if k == 0:
        return f"<{number_text(edges[0])}"
    if k == edges.size:
        return f">={number_text(edges[-1])}"
    return f"[{number_text(edges[k - 1])},{number_text(edges[k])})"


def _correction_short(scan: SegmentScan) -> str:
    return "BH" if scan.correction == CORRECTION else scan.correction


def _margin_text(scan: SegmentScan) -> str:
    return f"{scan.margin * 100:g} points" if scan.metric == "accuracy" else f"+{scan.margin:.0%} MAE"


def _negated(value: float | None) -> float | None:
    return None if value is None else -value


def _points(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:+.1f}"


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:+.0%}"
