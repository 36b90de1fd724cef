"""Paired comparison of production and candidate answers over the joined records.

Both models answered the same records, so every statistic is paired by construction: intervals
come from resampling whole records (production and candidate together), label changes are judged
with McNemar's exact test, and a difference counts as real only where it exceeds the noise floor
(production replayed through the same path). Every metric the comparison can produce is declared
in METRICS (the gate names them); a test proves each declared metric has a case checked against
scikit-learn or SciPy.

Most statistics are functions of column means of per-record indicator columns (accuracy = mean of
`correct` over mean of `has truth`, F1 = 2 TP / (PP + AP), kappa from class shares), so one set of
bootstrap resamples per scope gives every interval at once, for the whole run and for each slice.

A window can hold millions of records, so nothing here keeps a text per record: Accumulator takes the
records part by part and keeps a few numbers each (scores, label codes, flags); the 0/1 columns are
kept per group of records alike (same flags, same labels) rather than per record, and only the
real-valued columns (score deltas, errors) exist per record, one scope at a time. compare(frame) is
the same computation over one part.
"""
from __future__ import annotations

import dataclasses
import math
import zlib
from collections import Counter
from collections.abc import Callable
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd

from analysis import statistics as stats
from analysis.canonical import number_from_text
from analysis.diff import (RecordDiff, beyond_noise_of, changed_record, is_missing, noise_band_of,
                           one_sided_fields, text_values, threshold_crossings, top_change_order)
from analysis.outputs import canonical_text
from analysis.results import Comparison, MetricValue
from analysis.segments import SegmentEvidenceBuilder
from analysis.slices import SegmentBuilder

Kind = Literal["paired", "per_model", "noise_floor"]
Task = Literal["auto", "classification", "regression"]
Interval = Literal["value", "delta"]
# Integer ground truth with at most this many distinct values is taken as class labels.
_MAX_CLASSES = 20
SCORE_DELTA_STATS = ("mean", "std", "min", "p01", "p05", "p50", "p95", "p99", "max", "mean_abs")
_HISTOGRAM_BINS = 20
_SCATTER_POINTS = 1500


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    description: str
    kind: Kind
    higher_is_better: bool | None
    interval: Interval | None = None
    """What ci_low/ci_high bound: the value (paired metrics) or candidate - production (per-model ones)."""


METRICS: dict[str, MetricSpec] = {
    # typed diff
    "exact_match_rate": MetricSpec("share of records whose canonical answers hash alike", "paired", True, "value"),
    "tolerant_match_rate": MetricSpec("share of records whose answers match within the tolerances", "paired", True,
                                      "value"),
    "score_within_abs_tolerance_rate": MetricSpec(
        "share of scored records with |candidate - production| <= compare.abs_tolerance", "paired", True, "value"),
    "score_within_rel_tolerance_rate": MetricSpec(
        "share of scored records with |candidate - production| <= rel_tolerance x the larger |score|",
        "paired", True, "value"),
    "label_agreement": MetricSpec("share of labelled records where both models give the same label", "paired", True,
                                  "value"),
    "cohen_kappa": MetricSpec("label agreement corrected for chance (Cohen's kappa)", "paired", True, "value"),
    "label_flip_rate": MetricSpec("share of labelled records whose label changed", "paired", False, "value"),
    "threshold_crossing_rate": MetricSpec(
        "share of scored records whose score crossed one of compare.thresholds", "paired", False, "value"),
    "one_sided_output_rate": MetricSpec(
        "share of records with an output field (or score, or label) on one side only", "paired", False, "value"),
    "mean_score_delta": MetricSpec("mean candidate score - production score", "paired", None, "value"),
    "mean_abs_score_delta": MetricSpec("mean |candidate score - production score|", "paired", False, "value"),
    "p95_abs_score_delta": MetricSpec("95th percentile of |candidate score - production score|", "paired", False),
    "max_abs_score_delta": MetricSpec("largest |candidate score - production score|", "paired", False),
    "mean_score": MetricSpec("mean score of each model over records both scored", "per_model", None, "delta"),
    # distribution shift between the two score distributions
    "score_psi": MetricSpec("population stability index of candidate scores on production score deciles",
                            "paired", False),
    "score_ks": MetricSpec("two-sample Kolmogorov-Smirnov statistic between the score distributions", "paired",
                           False),
    "score_ks_p_value": MetricSpec("asymptotic p-value of the KS statistic (small: the distributions differ)",
                                   "paired", True),
    # noise floor: production replayed through the same path
    "real_difference_rate": MetricSpec(
        "share of records whose candidate answer differs by more than replay noise explains", "paired", False,
        "value"),
    "real_label_flip_rate": MetricSpec(
        "share of labelled records whose label flipped where replayed production kept it", "paired", False, "value"),
    "replay_exact_match_rate": MetricSpec(
        "share of records where production replayed offline hashes like its captured answer (noise floor)",
        "noise_floor", True, "value"),
    "replay_label_flip_rate": MetricSpec(
        "share of labelled records where replayed production changed its own label (noise floor)",
        "noise_floor", False, "value"),
    "replay_mean_abs_score_delta": MetricSpec(
        "mean |replayed production score - captured production score| (noise floor)", "noise_floor", False, "value"),
    "noise_score_band": MetricSpec(
        "score change replay noise explains: compare.noise_quantile of |replayed - captured| (noise floor)",
        "noise_floor", False),
    # quality against ground truth, each model and the paired difference
    "accuracy": MetricSpec("share of records whose label equals the ground truth", "per_model", True, "delta"),
    "precision": MetricSpec("precision of the positive class (macro over classes when more than two)",
                            "per_model", True, "delta"),
    "recall": MetricSpec("recall of the positive class (macro over classes when more than two)", "per_model", True,
                         "delta"),
    "f1": MetricSpec("F1 of the positive class (macro over classes when more than two)", "per_model", True,
                     "delta"),
    "roc_auc": MetricSpec("area under the ROC curve of the score for the positive class (binary)", "per_model",
                          True, "delta"),
    "mcnemar_p_value": MetricSpec(
        "McNemar's exact test on records exactly one model got right (small: the error rates differ)",
        "paired", None),
    "class_recall": MetricSpec("recall of one ground-truth class, one metric per class named class_recall:<label> "
                               "(whole run only)", "per_model", True, "delta"),
    "candidate_answer_rate": MetricSpec(
        "share of records production answered with a score or a label where the candidate answered with one too",
        "paired", True, "value"),
    "mae": MetricSpec("mean absolute error of the score against numeric ground truth", "per_model", False, "delta"),
    "rmse": MetricSpec("root mean squared error of the score against numeric ground truth", "per_model", False,
                       "delta"),
}


class CompareSpec(Protocol):
    """What compare reads of steps.config.CompareConfig (the core does not import steps)."""

    @property
    def decimals(self) -> int: ...


@dataclasses.dataclass(frozen=True)
class _Settings:
    """The CompareConfig fields compare reads (steps.config owns the defaults; the core does not import it)."""

    decimals: int
    abs_tolerance: float
    rel_tolerance: float
    positive_label: str | None
    bootstrap_resamples: int
    confidence: float
    seed: int
    thresholds: tuple[float, ...]
    noise_quantile: float
    psi_bins: int
    top_changes: int
    slices: tuple
    min_slice_support: int

    @classmethod
    def of(cls, config: Any) -> "_Settings":
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})


def compare(frame: pd.DataFrame, config: CompareSpec, task: Task = "auto") -> Comparison:
    """Every declared metric over joined records (shadow_records columns): the whole run, then each slice."""
    accumulator = Accumulator(config, task)
    accumulator.add(frame)
    if "record_id" in frame:  # records in id order: the same records give the same resamples, whatever the row order
        order = frame["record_id"].reset_index(drop=True).sort_values(kind="stable").index.to_numpy()
    else:
        order = np.arange(len(frame))
    return accumulator.finish(order, lambda positions: frame.iloc[positions])


# Label texts (both models', replayed production's, ground truth) get small integer codes; more distinct
# labels than this is no classification the statistics could hold (they keep columns per class).
_MAX_LABELS = 65536
_UNCODED = -3
_TRUTH_FACTS = _MAX_CLASSES + 1


class Accumulator:
    """compare() over joined records that arrive part by part, holding only numbers per record.

    add() takes each part's frame (shadow_records columns) and keeps per record a few numbers: the three
    scores, the join's noise, the numeric ground truth, small integer codes of the four labels and of
    each slice, and a handful of flags. Everything that needs the texts (canonical replay match, the
    fields one side's answer has alone, slice values) is worked out per part. finish(order, fetch) puts
    the records in record-id order (`order[i]` is the added record at position i) and computes every
    statistic exactly as over one frame; fetch(indices) gives back the top changed records' rows (record_id,
    input_text, production_raw, candidate_raw), indices counting records in the order they were added.
    """

    def __init__(self, config: Any, task: Task = "auto"):
        self.settings = _Settings.of(config)
        self.task = task
        self.n = 0
        self._chunks: dict[str, list[np.ndarray]] = {name: [] for name in _STORED}
        self._labels: dict[str, int] = {}
        self._only_p: Counter = Counter()
        self._only_c: Counter = Counter()
        self._truth_seen: set[str] = set()
        self._truth_non_numeric = self._truth_non_integer = self._truth_uncoded = False
        self._candidate_labelled = self._candidate_scored = False
        self.task_reason: str | None = None
        self._slices = SegmentBuilder(self.settings.slices, self.settings.min_slice_support) \
            if self.settings.slices else None
        self._auto_segments = SegmentEvidenceBuilder(config)

    def add(self, frame: pd.DataFrame) -> None:
        """The next part's records."""
        settings, n = self.settings, len(frame)
        p_score, c_score = _numeric(frame, "production_score"), _numeric(frame, "candidate_score")
        p_label, c_label = _labels(frame, "production_label"), _labels(frame, "candidate_label")
        r_label, truth = _labels(frame, "production_replay_label"), _labels(frame, "ground_truth_label")
        p_hash = text_values(frame, "production_hash")
        production_raw, candidate_raw = text_values(frame, "production_raw"), text_values(frame, "candidate_raw")
        replay_raw = text_values(frame, "production_replay_raw")
        only_p, only_c, fields = one_sided_fields(production_raw, candidate_raw)
        self._only_p.update(only_p)
        self._only_c.update(only_c)
        replayed = replay_raw.notna().to_numpy(bool)
        store = {
            "p_score": p_score, "c_score": c_score, "r_score": _numeric(frame, "production_replay_score"),
            "noise": _numeric(frame, "noise_abs_diff"),
            "truth_value": np.array([_number(t) for t in truth], dtype=float),
            "p_label": self._codes(p_label), "c_label": self._codes(c_label),
            "r_label": self._codes(r_label), "truth": self._codes(truth, truth=True),
            "same_hash": (p_hash == text_values(frame, "candidate_hash")).to_numpy(bool),
            "hashed": p_hash.notna().to_numpy(bool),
            "tolerant": _column(frame, "tolerant_match").astype("boolean").fillna(False).to_numpy(bool),
            "fields_one_sided": fields, "replayed": replayed,
            "replay_same": np.array([bool(r) and _same_canonical(p, a, settings.decimals)
                                     for p, a, r in zip(production_raw, replay_raw, replayed)], dtype=bool),
        }
        for name, values in store.items():
            missing = _MISSING[name]
            if name in _SPARSE and (np.all(values == -1) if missing == -1 else not np.isfinite(values).any()):
                values = len(values)  # all missing (nothing replayed, no ground truth): a count, not an array
            self._chunks[name].append(values)
        for value in {t for t in truth if t is not None}:  # what _task asks of the distinct truth values
            number = number_from_text(value)
            self._truth_non_numeric |= number is None
            self._truth_non_integer |= number is not None and not float(number).is_integer()
            if len(self._truth_seen) < _TRUTH_FACTS:
                self._truth_seen.add(value)
        self._candidate_labelled |= bool(_column(frame, "candidate_label").notna().any())
        self._candidate_scored |= bool(_column(frame, "candidate_score").notna().any())
        if self._slices is not None:
            self._slices.add(frame)
        self._auto_segments.add(frame)
        self.n += n

    def _codes(self, labels: list[str | None], truth: bool = False) -> np.ndarray:
        """Each label's code (-1: none). Ground truth past the cap (a regression's numbers) gets _UNCODED."""
        codes = self._labels

        def code(x: str | None) -> int:
            if x is None:
                return -1
            if x in codes:
                return codes[x]
            if len(codes) >= _MAX_LABELS:
                if truth:
                    self._truth_uncoded = True
                    return _UNCODED
                raise ValueError(f"more than {_MAX_LABELS} distinct labels: not labels the statistics can compare")
            codes[x] = len(codes)
            return codes[x]

        return np.fromiter((code(x) for x in labels), dtype=np.int32, count=len(labels))

    def finish(self, order: np.ndarray, fetch: Callable[[np.ndarray], pd.DataFrame]) -> Comparison:
        settings = self.settings
        order = np.asarray(order, dtype=np.int64)
        if order.size != self.n:
            raise ValueError(f"order has {order.size} positions for {self.n} records")
        base: dict[str, np.ndarray] = {}
        for name, chunks in self._chunks.items():  # one column at a time: a copy of one column at most
            if all(isinstance(chunk, int) for chunk in chunks):  # missing throughout: a view, no memory
                base[name] = np.broadcast_to(np.array(_MISSING[name], dtype=_STORED[name]), (self.n,))
            else:
                base[name] = np.concatenate([np.full(chunk, _MISSING[name], dtype=_STORED[name])
                                             if isinstance(chunk, int) else chunk for chunk in chunks])[order]
            chunks.clear()
        texts = [""] * len(self._labels)
        for text, code in self._labels.items():
            texts[code] = text
        has_truth = bool((base["truth"] != -1).any())
        resolved = self._resolve_task() if has_truth else None
        if resolved == "classification" and self._truth_uncoded:
            raise ValueError(f"classification over more than {_MAX_LABELS} distinct labels and ground-truth values "
                             "is not something the statistics can hold (they keep columns per class)")
        columns = _RecordColumns(base, texts, settings, resolved)
        metrics = _scope_metrics(columns, _ALL, "all", settings, full=True)
        found = self._slices.segments(order) if self._slices is not None else []
        for segment, rows in found:
            if segment.compared:
                metrics += _scope_metrics(columns, rows, segment.name, settings, full=False)
        diff = self._diff(columns, base, texts, order, fetch)
        production, candidate = _paired(base["p_score"], base["c_score"])
        return Comparison(
            metrics=tuple(metrics), flip_matrix=_flip_matrix(base["p_label"], base["c_label"], texts),
            score_delta=_score_delta(candidate - production), has_ground_truth=has_truth, task=resolved, diff=diff,
            distributions=_distributions(production, candidate),
            segments=tuple(segment for segment, _ in found),
            settings={"confidence": settings.confidence, "bootstrap_resamples": settings.bootstrap_resamples,
                      "seed": settings.seed, "min_slice_support": settings.min_slice_support,
                      "noise_quantile": settings.noise_quantile, "thresholds": list(settings.thresholds),
                      "positive_label": columns.positive, "task_reason": self.task_reason,
                      "task_source": "compare.task" if self.task != "auto" else "detected"},
            segment_scan=self._auto_segments.finish(resolved) if self._auto_segments.settings.auto_segments else None)

    def _resolve_task(self) -> Literal["classification", "regression"]:
        """_task over the distinct ground-truth values seen, without keeping them all; self.task_reason says why."""
        if self.task != "auto":
            self.task_reason = f"compare.task is set to {self.task}"
            return self.task
        if self._truth_non_numeric:
            self.task_reason = "ground truth holds non-numeric values, so they are class labels"
            return "classification"
        categorical = not self._truth_non_integer and len(self._truth_seen) <= _MAX_CLASSES
        if categorical and self._candidate_labelled:
            self.task_reason = (f"ground truth holds at most {_MAX_CLASSES} distinct whole numbers and the models "
                                "answer with labels, so they are classes")
            return "classification"
        if self._candidate_scored:
            self.task_reason = ("ground truth holds " + ("fractional numbers" if self._truth_non_integer else
                                f"more than {_MAX_CLASSES} distinct numbers" if not categorical else
                                "numbers and the models answer with scores only")
                                + ", so the task is regression on the score")
            return "regression"
        self.task_reason = "the models give no score to regress, so ground truth is taken as class labels"
        return "classification"

    def _diff(self, columns: "_RecordColumns", base: dict[str, np.ndarray], texts: list[str], order: np.ndarray,
              fetch: Callable[[np.ndarray], pd.DataFrame]) -> RecordDiff:
        settings = self.settings
        p, c = base["p_score"], base["c_score"]
        p_label, c_label = base["p_label"], base["c_label"]
        top = top_change_order(p, c, columns.flip_bool, ~base["same_hash"], columns.real, settings.top_changes)
        rows = fetch(order[top]) if top.size else None
        changes = []
        for k, i in enumerate(top):
            row = rows.iloc[k]
            changes.append(changed_record(
                str(row.get("record_id")), row.get("input_text"), row.get("production_raw"), row.get("candidate_raw"),
                p[i], c[i], texts[p_label[i]] if p_label[i] >= 0 else None,
                texts[c_label[i]] if c_label[i] >= 0 else None, base["noise"][i], bool(columns.real[i])))
        return RecordDiff(
            records=self.n, exact=int(base["same_hash"].sum()), tolerant=int(base["tolerant"].sum()),
            crossings=threshold_crossings(p, c, settings.thresholds), top_changes=tuple(changes),
            fields_only_production=dict(sorted(self._only_p.items(), key=lambda kv: (-kv[1], kv[0]))),
            fields_only_candidate=dict(sorted(self._only_c.items(), key=lambda kv: (-kv[1], kv[0]))),
            records_one_sided=int(columns.one_sided.sum()), noise_band=columns.band,
            beyond_noise=int(columns.real.sum()), noise_records=int(base["replayed"].sum()))


# The whole run as a scope's rows: indexing with it gives views, not copies.
_ALL = slice(None)

# What Accumulator keeps per record, and its type.
_STORED = {"p_score": float, "c_score": float, "r_score": float, "noise": float, "truth_value": float,
           "p_label": np.int32, "c_label": np.int32, "r_label": np.int32, "truth": np.int32,
           "same_hash": bool, "hashed": bool, "tolerant": bool, "fields_one_sided": bool, "replayed": bool,
           "replay_same": bool}
_MISSING = {name: (np.nan if kind is float else -1 if kind is np.int32 else False) for name, kind in _STORED.items()}
# Columns often missing for a whole run (no production replay, no ground truth): kept only where present.
_SPARSE = ("r_score", "noise", "truth_value", "r_label", "truth")


def flip_matrix(frame: pd.DataFrame) -> dict[str, dict[str, int]]:
    """production label -> candidate label -> records, over records both models labelled."""
    labelled = _labelled(frame)
    counts = labelled.groupby(["production_label", "candidate_label"]).size()
    matrix: dict[str, dict[str, int]] = {}
    for (production, candidate), count in sorted(counts.items()):
        matrix.setdefault(str(production), {})[str(candidate)] = int(count)
    return matrix


def _flip_matrix(p_label: np.ndarray, c_label: np.ndarray, texts: list[str]) -> dict[str, dict[str, int]]:
    both = (p_label >= 0) & (c_label >= 0)
    width = max(len(texts), 1)
    pairs = np.bincount(p_label[both].astype(np.int64) * width + c_label[both], minlength=0)
    counts = {(texts[k // width], texts[k % width]): int(pairs[k]) for k in np.flatnonzero(pairs)}
    matrix: dict[str, dict[str, int]] = {}
    for (production, candidate), count in sorted(counts.items()):
        matrix.setdefault(production, {})[candidate] = count
    return matrix


def score_delta(frame: pd.DataFrame) -> dict[str, float]:
    """Summary of candidate - production score over records both scored; empty when none."""
    return _score_delta(_score_pairs(frame, "candidate_score"))


def _score_delta(delta: np.ndarray) -> dict[str, float]:
    if delta.size == 0:
        return {}
    quantiles = np.quantile(delta, [0.01, 0.05, 0.5, 0.95, 0.99])
    return {"mean": float(delta.mean()), "std": float(delta.std(ddof=1)) if delta.size > 1 else 0.0,
            "min": float(delta.min()), "p01": float(quantiles[0]), "p05": float(quantiles[1]),
            "p50": float(quantiles[2]), "p95": float(quantiles[3]), "p99": float(quantiles[4]),
            "max": float(delta.max()), "mean_abs": float(np.abs(delta).mean())}


def distributions(frame: pd.DataFrame) -> dict[str, Any]:
    """What the report plots: score histograms on shared bins, the delta histogram, a scatter sample."""
    production, candidate = _paired_scores(frame, "candidate_score")
    # Every k-th pair in record order (sorted by record id, so row order does not matter).
    return _distributions(production, candidate, np.argsort(_paired_ids(frame), kind="stable"))


def _distributions(production: np.ndarray, candidate: np.ndarray, order: np.ndarray | None = None) -> dict[str, Any]:
    """distributions() of paired scores; order: the pairs in record order (None: as given)."""
    if production.size == 0:
        return {}
    low, high = float(min(production.min(), candidate.min())), float(max(production.max(), candidate.max()))
    edges = np.linspace(low, high if high > low else low + 1.0, _HISTOGRAM_BINS + 1)
    delta = candidate - production
    d_low, d_high = float(delta.min()), float(delta.max())
    d_edges = np.linspace(d_low, d_high if d_high > d_low else d_low + 1e-9, _HISTOGRAM_BINS + 1)
    pick = np.linspace(0, production.size - 1, min(production.size, _SCATTER_POINTS)).astype(int)
    if order is not None:
        pick = order[pick]
    return {
        "score_edges": [float(e) for e in edges],
        "production_counts": [int(n) for n in np.histogram(production, edges)[0]],
        "candidate_counts": [int(n) for n in np.histogram(candidate, edges)[0]],
        "delta_edges": [float(e) for e in d_edges],
        "delta_counts": [int(n) for n in np.histogram(delta, d_edges)[0]],
        "scatter": [[round(float(production[i]), 6), round(float(candidate[i]), 6)] for i in pick],
    }


# ---------------------------------------------------------------- per-record columns, computed once

# Flags a record's indicator columns depend on besides its labels (one bit each in its group key).
_DENSE_KEYS = 1 << 20  # a bincount of at most 8 MB
_FLAGS = ("exact", "tolerant", "scored", "abs_ok", "rel_ok", "crossing", "one_sided", "replayed", "replay_same",
          "replay_scored", "real", "truth_num")


class _RecordColumns:
    """The per-record columns every statistic is a mean-function of, without widening them per record.

    Indicator columns (0/1: exact, labelled, agree, kp0, ap:1, ...) are functions of a record's flags
    and label codes, so each record keeps one group number and the columns are kept per group
    (groups x columns, a few hundred rows at most). Real-valued columns (score deltas, errors) are
    computed from the scores when a scope asks for them.
    """

    def __init__(self, base: dict[str, np.ndarray], texts: list[str], settings: _Settings, task: str | None):
        self.settings, self.task = settings, task
        p_score, c_score, r_score = base["p_score"], base["c_score"], base["r_score"]
        self.p_score, self.c_score, self.truth_code = p_score, c_score, base["truth"]
        self.n = n = p_score.size
        self.texts = texts
        code_of = {text: code for code, text in enumerate(texts)}
        p_label, c_label, r_label, truth = base["p_label"], base["c_label"], base["r_label"], base["truth"]

        scored = np.isfinite(p_score) & np.isfinite(c_score)
        delta = np.where(scored, c_score - p_score, 0.0)
        abs_delta = np.abs(delta)
        flags = {"exact": base["same_hash"] & base["hashed"], "tolerant": base["tolerant"], "scored": scored,
                 "abs_ok": scored & (abs_delta <= settings.abs_tolerance),
                 "rel_ok": scored & (abs_delta <= settings.rel_tolerance *
                                     np.maximum(np.abs(np.nan_to_num(p_score)), np.abs(np.nan_to_num(c_score))))}
        del delta, abs_delta
        crossing = np.zeros(n, dtype=bool)
        for t in settings.thresholds:
            crossing |= scored & ((p_score < t) != (c_score < t))
        flags["crossing"] = crossing
        labelled = (p_label >= 0) & (c_label >= 0)
        self.p_answered = np.isfinite(p_score) | (p_label >= 0)
        self.c_answered = np.isfinite(c_score) | (c_label >= 0)
        self.one_sided = base["fields_one_sided"] | (np.isfinite(p_score) != np.isfinite(c_score)) | \
            ((p_label < 0) != (c_label < 0))
        flags["one_sided"] = self.one_sided
        replayed = base["replayed"]
        self.replayed_any = bool(replayed.any())
        flags["replayed"], flags["replay_same"] = replayed, base["replay_same"]
        replay_scored = replayed & np.isfinite(r_score) & np.isfinite(p_score)
        flags["replay_scored"] = replay_scored
        self.noise_abs = np.where(replay_scored, np.abs(r_score - p_score), np.nan) if self.replayed_any \
            else np.broadcast_to(np.nan, (n,))

        self.flip_bool = labelled & (p_label != c_label)
        self.band = noise_band_of(base["noise"], r_score, p_score, settings.noise_quantile, settings.abs_tolerance)
        label_real = self.flip_bool & ~((r_label >= 0) & (p_label >= 0) & (r_label != p_label))
        self.real = beyond_noise_of(p_score, c_score, labelled, label_real, base["same_hash"], base["tolerant"],
                                    self.band, settings.abs_tolerance, settings.rel_tolerance)
        flags["real"] = self.real
        if task == "regression":
            self.truth_value = base["truth_value"]
            flags["truth_num"] = np.isfinite(self.truth_value) & scored
        else:
            flags["truth_num"] = np.zeros(n, dtype=bool)

        kappa = np.unique(np.concatenate([p_label[labelled], c_label[labelled]]))
        self.kappa_classes = sorted(texts[k] for k in kappa)
        self.positive: str | None = None
        self.classes: tuple[list[str], list[str]] = ([], [])
        self.auc_rows = np.zeros(n, dtype=bool)
        if task == "classification":
            has = (truth >= 0) & labelled
            seen_truth = {texts[k] for k in np.unique(truth[has])}
            p_seen, c_seen = {texts[k] for k in np.unique(p_label[has])}, {texts[k] for k in np.unique(c_label[has])}
            seen = seen_truth | p_seen | c_seen
            if len(seen) <= 2:
                positive = settings.positive_label or ("1" if "1" in seen else (sorted(seen)[-1] if seen else None))
                self.positive = positive
                self.classes = ([positive], [positive]) if positive is not None else ([], [])
            else:  # macro average over the classes in the truth or in that model's predictions, as scikit-learn does
                self.classes = (sorted(seen_truth | p_seen), sorted(seen_truth | c_seen))
            self.auc_rows = np.isfinite(p_score) & np.isfinite(c_score) & (truth >= 0)
        self.truth_classes: list[str] = sorted(seen_truth) if task == "classification" else []
        self._class_codes = {label: code_of.get(label, -2)
                             for label in sorted(set(self.classes[0]) | set(self.classes[1]) | set(self.truth_classes))}
        self._kappa_codes = [code_of[label] for label in self.kappa_classes]

        # One group per distinct (flags, label codes): the indicator columns are the same within it.
        key = np.zeros(n, dtype=np.int64)
        for bit, name in enumerate(_FLAGS):
            key |= flags[name].astype(np.int64) << bit
        for codes in (p_label, c_label, r_label, truth if task == "classification" else None):
            if codes is None:
                continue
            width = int(codes.max(initial=-1)) + 2
            if int(key.max(initial=0)) >= (2**62) // width:
                key = np.unique(key, return_inverse=True)[1].astype(np.int64).reshape(-1)
            key = key * width + (codes.astype(np.int64) + 1)
        if int(key.max(initial=0)) < _DENSE_KEYS:  # small keys: number them without sorting the records
            present = np.bincount(key, minlength=1) > 0
            number = np.cumsum(present) - 1
            self.group = number[key].astype(np.int32)
            del present, number
            first = np.empty(int(self.group.max(initial=-1)) + 1, dtype=np.int64)
            first[self.group] = np.arange(n)  # any record of a group stands for it (here: its last)
        else:
            _, first, group = np.unique(key, return_index=True, return_inverse=True)
            self.group = group.reshape(-1).astype(np.int32)
            del group
        del key
        representative = {name: values[first] for name, values in
                          (("p", p_label), ("c", c_label), ("r", r_label), ("t", truth))}
        indicators = self._indicators({name: values[first] for name, values in flags.items()}, representative)
        del flags
        self.indicator_names = list(indicators)
        self.group_values = np.column_stack([indicators[name] for name in self.indicator_names]).astype(float) \
            if len(first) else np.zeros((0, len(self.indicator_names)))
        self.float_names = ["delta", "abs_delta", "p_score", "c_score", "replay_abs_delta"] + \
            (["p_abs_err", "c_abs_err", "p_sq_err", "c_sq_err"] if task == "regression" else [])

    def _indicators(self, f: dict[str, np.ndarray], codes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The 0/1 columns (in the order the statistics name them) of records with these flags and codes."""
        p_label, c_label, r_label, truth = codes["p"], codes["c"], codes["r"], codes["t"]
        cols: dict[str, np.ndarray] = {"one": np.ones(p_label.size, dtype=bool), "exact": f["exact"],
                                       "tolerant": f["tolerant"], "scored": f["scored"], "abs_ok": f["abs_ok"],
                                       "rel_ok": f["rel_ok"], "crossing": f["crossing"],
                                       "one_sided": f["one_sided"]}
        labelled = (p_label >= 0) & (c_label >= 0)
        agree = labelled & (p_label == c_label)
        cols.update(labelled=labelled, agree=agree, flip=labelled & ~agree)
        for k, code in enumerate(self._kappa_codes):
            cols[f"kp{k}"] = labelled & (p_label == code)
            cols[f"kc{k}"] = labelled & (c_label == code)
        replay_labelled = f["replayed"] & (p_label >= 0) & (r_label >= 0)
        cols.update(replayed=f["replayed"], replay_same=f["replay_same"], replay_scored=f["replay_scored"],
                    replay_labelled=replay_labelled, replay_flip=replay_labelled & (p_label != r_label),
                    real=f["real"], real_flip=labelled & ~agree & ((r_label < 0) | (p_label == r_label)))
        if self.task == "classification":
            has = (truth >= 0) & labelled
            cols.update(truth_lab=has, p_correct=has & (p_label == truth), c_correct=has & (c_label == truth))
            for label, code in self._class_codes.items():
                actual = has & (truth == code)
                cols[f"ap:{label}"] = actual
                for side, predicted in (("p", p_label), ("c", c_label)):
                    said = has & (predicted == code)
                    cols[f"{side}pp:{label}"] = said
                    cols[f"{side}tp:{label}"] = said & actual
        elif self.task == "regression":
            cols["truth_num"] = f["truth_num"]
        return cols

    def float_column(self, name: str, rows: np.ndarray) -> np.ndarray:
        """A real-valued column over some records (NaN-free; 0 where it does not apply)."""
        p, c = self.p_score[rows], self.c_score[rows]
        scored = np.isfinite(p) & np.isfinite(c)
        if name in ("delta", "abs_delta"):
            delta = np.where(scored, c - p, 0.0)
            return delta if name == "delta" else np.abs(delta)
        if name in ("p_score", "c_score"):
            return np.where(scored, p if name == "p_score" else c, 0.0)
        if name == "replay_abs_delta":
            noise = self.noise_abs[rows]
            return np.where(np.isfinite(noise), noise, 0.0)
        values = self.truth_value[rows]
        has = np.isfinite(values) & scored
        error = np.where(has, (p if name.startswith("p") else c) - np.nan_to_num(values), 0.0)
        return np.abs(error) if name.endswith("abs_err") else error ** 2

    def group_column(self, name: str, rows: np.ndarray) -> np.ndarray:
        return (self.group_values[:, self.indicator_names.index(name)] > 0)[self.group[rows]]


# ---------------------------------------------------------------- statistics of one scope

class _Means:
    """Column means of one scope and of its bootstrap resamples; statistics are functions of them."""

    def __init__(self, columns: _RecordColumns, rows: np.ndarray, settings: _Settings, seed: int):
        self.names = columns.indicator_names + columns.float_names
        self.index = {name: i for i, name in enumerate(self.names)}
        self.n = n = columns.n if rows is _ALL else len(rows)
        self.confidence = settings.confidence
        groups = columns.group[rows]
        width = len(columns.indicator_names)
        floats, constant = [], {}
        for name in columns.float_names:
            values = columns.float_column(name, rows)
            if not values.any():
                constant[name] = 0.0  # all zero (nothing replayed, say): its mean is 0 in every resample
            else:
                floats.append((name, values))
        self.point = np.full(len(self.names), np.nan)
        if n:
            # Matrix means add the records up in order, so the sums below are the very same numbers.
            self.point[:width] = np.bincount(groups, minlength=columns.group_values.shape[0]) @ \
                columns.group_values / n
            for name, values in floats:
                self.point[self.index[name]] = stats.naive_mean(values)
            for name in constant:
                self.point[self.index[name]] = 0.0
        self.boot = None
        if n >= 2 and settings.bootstrap_resamples > 0:
            drawn = stats.bootstrap_means_grouped(groups, columns.group_values, [v for _, v in floats],
                                                  settings.bootstrap_resamples, seed)
            self.boot = np.zeros((settings.bootstrap_resamples, len(self.names)))
            self.boot[:, :width] = drawn[:, :width]
            for j, (name, _) in enumerate(floats):
                self.boot[:, self.index[name]] = drawn[:, width + j]
        del floats

    def count(self, name: str) -> int:
        return int(round(self.point[self.index[name]] * self.n)) if self.n else 0

    def evaluate(self, statistic: Callable[[Callable[[str], Any]], Any]) -> tuple[float | None, float | None,
                                                                                 float | None]:
        """(estimate, ci_low, ci_high) of a statistic of column means."""
        with np.errstate(divide="ignore", invalid="ignore"):
            point = float(statistic(lambda name: self.point[self.index[name]]))
            if not math.isfinite(point):
                return None, None, None
            if self.boot is None:
                return point, None, None
            values = np.asarray(statistic(lambda name: self.boot[:, self.index[name]]), dtype=float)
        interval = stats._percentile(point, values, self.confidence, "bootstrap")
        return point, interval.low, interval.high

    def proportion(self, name: str, support: str) -> tuple[float | None, float | None, float | None, int]:
        """A share with its Wilson interval, and its support."""
        trials = self.count(support)
        interval = stats.wilson_interval(self.count(name), trials, self.confidence)
        return interval.estimate, interval.low, interval.high, trials


def _scope_metrics(columns: _RecordColumns, rows: np.ndarray, slice_name: str, settings: _Settings,
                   full: bool) -> list[MetricValue]:
    seed = (settings.seed + zlib.crc32(slice_name.encode())) % 2**32
    means = _Means(columns, rows, settings, seed)
    out: list[MetricValue] = []

    def rate(name: str, numerator: str, support: str) -> None:
        value, low, high, trials = means.proportion(numerator, support)
        out.append(MetricValue(name, value, slice=slice_name, ci_low=low, ci_high=high, support=trials))

    def value_metric(name: str, statistic, support: int) -> None:
        value, low, high = means.evaluate(statistic) if support else (None, None, None)
        out.append(MetricValue(name, value, slice=slice_name, ci_low=low, ci_high=high, support=support))

    n, scored, labelled = means.n, means.count("scored"), means.count("labelled")
    rate("exact_match_rate", "exact", "one")
    rate("tolerant_match_rate", "tolerant", "one")
    rate("score_within_abs_tolerance_rate", "abs_ok", "scored")
    rate("score_within_rel_tolerance_rate", "rel_ok", "scored")
    rate("label_agreement", "agree", "labelled")
    value_metric("cohen_kappa", lambda m: _kappa(m, len(columns.kappa_classes)), labelled)
    rate("label_flip_rate", "flip", "labelled")
    rate("threshold_crossing_rate", "crossing", "scored")
    rate("one_sided_output_rate", "one_sided", "one")
    value_metric("mean_score_delta", lambda m: m("delta") / m("scored"), scored)
    value_metric("mean_abs_score_delta", lambda m: m("abs_delta") / m("scored"), scored)
    both = columns.group_column("scored", rows)
    abs_delta = columns.float_column("abs_delta", rows)[both]
    out.append(MetricValue("p95_abs_score_delta", float(np.quantile(abs_delta, 0.95)) if abs_delta.size else None,
                           slice=slice_name, support=int(abs_delta.size)))
    out.append(MetricValue("max_abs_score_delta", float(abs_delta.max()) if abs_delta.size else None,
                           slice=slice_name, support=int(abs_delta.size)))
    out.append(_per_model(means, "mean_score", lambda m: m("p_score") / m("scored"),
                          lambda m: m("c_score") / m("scored"), scored, slice_name))
    production_scores, candidate_scores = columns.p_score[rows][both], columns.c_score[rows][both]
    ks, ks_p = stats.ks_2samp(production_scores, candidate_scores)
    support = int(both.sum())
    out += [MetricValue("score_psi", stats.psi(production_scores, candidate_scores, settings.psi_bins),
                        slice=slice_name, support=support),
            MetricValue("score_ks", ks, slice=slice_name, support=support),
            MetricValue("score_ks_p_value", ks_p, slice=slice_name, support=support)]

    p_answered = columns.p_answered[rows]
    answered = stats.wilson_interval(int(np.sum(p_answered & columns.c_answered[rows])), int(p_answered.sum()),
                                     settings.confidence)
    out.append(MetricValue("candidate_answer_rate", answered.estimate, slice=slice_name, ci_low=answered.low,
                           ci_high=answered.high, support=int(p_answered.sum())))
    rate("real_difference_rate", "real", "one")
    rate("real_label_flip_rate", "real_flip", "labelled")
    if columns.replayed_any and means.count("replayed"):
        rate("replay_exact_match_rate", "replay_same", "replayed")
        rate("replay_label_flip_rate", "replay_flip", "replay_labelled")
        value_metric("replay_mean_abs_score_delta", lambda m: m("replay_abs_delta") / m("replay_scored"),
                     means.count("replay_scored"))
        noise = columns.noise_abs[rows]
        noise = noise[np.isfinite(noise)]
        band = max(float(np.quantile(noise, settings.noise_quantile)), settings.abs_tolerance) if noise.size else None
        out.append(MetricValue("noise_score_band", band, slice=slice_name, support=int(noise.size)))

    if columns.task == "classification":
        out += _classification_metrics(columns, means, rows, slice_name, settings, full)
    elif columns.task == "regression":
        count = means.count("truth_num")
        out.append(_per_model(means, "mae", lambda m: m("p_abs_err") / m("truth_num"),
                              lambda m: m("c_abs_err") / m("truth_num"), count, slice_name))
        out.append(_per_model(means, "rmse", lambda m: np.sqrt(m("p_sq_err") / m("truth_num")),
                              lambda m: np.sqrt(m("c_sq_err") / m("truth_num")), count, slice_name))
    return out


def _classification_metrics(columns: _RecordColumns, means: _Means, rows: np.ndarray, slice_name: str,
                            settings: _Settings, full: bool) -> list[MetricValue]:
    count = means.count("truth_lab")
    p_classes, c_classes = columns.classes

    def macro(side: str, classes: list[str], kind: str):
        def statistic(m):
            parts = []
            for label in classes:
                tp, pp, ap = m(f"{side}tp:{label}"), m(f"{side}pp:{label}"), m(f"ap:{label}")
                numerator, denominator = {"precision": (tp, pp), "recall": (tp, ap), "f1": (2 * tp, pp + ap)}[kind]
                parts.append(np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), 0.0))
            return np.mean(parts, axis=0) if parts else np.nan * m("one")
        return statistic

    out = [_per_model(means, "accuracy", lambda m: m("p_correct") / m("truth_lab"),
                      lambda m: m("c_correct") / m("truth_lab"), count, slice_name)]
    for kind in ("precision", "recall", "f1"):
        out.append(_per_model(means, kind, macro("p", p_classes, kind), macro("c", c_classes, kind), count,
                              slice_name))
    p_correct, c_correct = columns.group_column("p_correct", rows), columns.group_column("c_correct", rows)
    truth_lab = columns.group_column("truth_lab", rows)
    production_only_wrong = int(np.sum(c_correct & ~p_correct & truth_lab))
    candidate_only_wrong = int(np.sum(p_correct & ~c_correct & truth_lab))
    out.append(MetricValue("mcnemar_p_value", stats.mcnemar_exact(production_only_wrong, candidate_only_wrong)
                           if count else None, slice=slice_name, support=production_only_wrong + candidate_only_wrong))
    out.append(_roc_auc(columns, rows, slice_name, settings, full))
    if full:  # each class's recall, so a rare class the accuracy barely weighs can be judged on its own
        for label in columns.truth_classes:
            out.append(_per_model(means, f"class_recall:{label}", lambda m, k=label: m(f"ptp:{k}") / m(f"ap:{k}"),
                                  lambda m, k=label: m(f"ctp:{k}") / m(f"ap:{k}"), means.count(f"ap:{label}"),
                                  slice_name))
    return out


def _roc_auc(columns: _RecordColumns, rows: np.ndarray, slice_name: str, settings: _Settings,
             full: bool) -> MetricValue:
    """ROC AUC of each model's score for the positive class; the delta's interval on the whole run only."""
    if columns.positive is None:
        return MetricValue("roc_auc", None, slice=slice_name)
    keep = np.flatnonzero(columns.auc_rows) if rows is _ALL else rows[columns.auc_rows[rows]]
    positive_code = columns.texts.index(columns.positive) if columns.positive in columns.texts else -2
    positive = columns.truth_code[keep] == positive_code
    p, c = columns.p_score[keep], columns.c_score[keep]
    production, candidate = stats.roc_auc(positive, p), stats.roc_auc(positive, c)
    low = high = None
    if full and production is not None and candidate is not None and settings.bootstrap_resamples > 0:
        def delta(index: np.ndarray) -> float:
            a, b = stats.roc_auc(positive[index], c[index]), stats.roc_auc(positive[index], p[index])
            return np.nan if a is None or b is None else a - b
        interval = stats.bootstrap_interval_by_index(keep.size, delta, settings.bootstrap_resamples,
                                                     settings.confidence, settings.seed)
        low, high = interval.low, interval.high
    metric = _per_model_values("roc_auc", production, candidate, keep.size, slice_name)
    return dataclasses.replace(metric, ci_low=low, ci_high=high)


def _kappa(m, classes: int):
    observed = m("agree") / m("labelled")
    expected = sum(m(f"kp{k}") * m(f"kc{k}") for k in range(classes)) / m("labelled") ** 2 if classes else 0 * observed
    # Both models giving one and the same label throughout leaves kappa undefined (0 / 0).
    return np.where(np.isclose(expected, 1.0), np.nan, (observed - expected) / (1.0 - expected))


def _per_model(means: _Means, name: str, production, candidate, support: int, slice_name: str) -> MetricValue:
    if not support:
        return MetricValue(name, None, slice=slice_name, support=support)
    p_value = means.evaluate(production)[0]
    c_value = means.evaluate(candidate)[0]
    metric = _per_model_values(name, p_value, c_value, support, slice_name)
    if metric.delta is None:
        return metric
    _, low, high = means.evaluate(lambda m: candidate(m) - production(m))
    return dataclasses.replace(metric, ci_low=low, ci_high=high)


def _per_model_values(name: str, production: float | None, candidate: float | None, support: int,
                      slice_name: str) -> MetricValue:
    delta = None if production is None or candidate is None else candidate - production
    return MetricValue(name, candidate, slice=slice_name, production=production, candidate=candidate, delta=delta,
                       support=support)


def _same_canonical(captured: str | None, replayed: str | None, decimals: int) -> bool:
    if captured is None or replayed is None:
        return False
    canonical = canonical_text(captured, decimals)
    return canonical is not None and canonical == canonical_text(replayed, decimals)


def _labelled(frame: pd.DataFrame) -> pd.DataFrame:
    production, candidate = text_values(frame, "production_label"), text_values(frame, "candidate_label")
    both = production.notna() & candidate.notna()
    return pd.DataFrame({"production_label": production[both].astype(str),
                         "candidate_label": candidate[both].astype(str)})


def _paired(production: np.ndarray, candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    both = np.isfinite(production) & np.isfinite(candidate)
    return production[both], candidate[both]


def _paired_scores(frame: pd.DataFrame, other: str) -> tuple[np.ndarray, np.ndarray]:
    production, against = _numeric(frame, "production_score"), _numeric(frame, other)
    both = np.isfinite(production) & np.isfinite(against)
    return production[both], against[both]


def _paired_ids(frame: pd.DataFrame) -> np.ndarray:
    both = np.isfinite(_numeric(frame, "production_score")) & np.isfinite(_numeric(frame, "candidate_score"))
    ids = text_values(frame, "record_id").fillna("").to_numpy(str)
    return ids[both]


def _score_pairs(frame: pd.DataFrame, other: str) -> np.ndarray:
    production, against = _paired_scores(frame, other)
    return against - production


def _numeric(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name not in frame:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(float, na_value=np.nan)


def _labels(frame: pd.DataFrame, name: str) -> list[str | None]:
    return list(text_values(frame, name))


def _number(value: str | None) -> float:
    number = number_from_text(value) if value is not None else None
    return float(number) if number is not None else np.nan


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    return frame[name] if name in frame else pd.Series([None] * len(frame), index=frame.index, dtype=object)
