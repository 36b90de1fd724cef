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
"""
from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Callable
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd

from analysis import statistics as stats
from analysis.canonical import number_from_text
from analysis.diff import beyond_noise, noise_band, one_sided_fields, record_diff
from analysis.outputs import canonical_text
from analysis.results import Comparison, MetricValue
from analysis.slices import segments

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
    decimals: int = 6
    abs_tolerance: float = 1e-6
    rel_tolerance: float = 1e-4
    positive_label: str | None = None
    bootstrap_resamples: int = 1000
    confidence: float = 0.95
    seed: int = 20250301
    thresholds: tuple[float, ...] = (0.5,)
    noise_quantile: float = 0.99
    psi_bins: int = 10
    top_changes: int = 20
    slices: tuple = ()
    min_slice_support: int = 30

    @classmethod
    def of(cls, config: Any) -> "_Settings":
        defaults = cls()
        return cls(**{f.name: getattr(config, f.name, getattr(defaults, f.name)) for f in dataclasses.fields(cls)})


def compare(frame: pd.DataFrame, config: CompareSpec, task: Task = "auto") -> Comparison:
    """Every declared metric over joined records (shadow_records columns): the whole run, then each slice."""
    settings = _Settings.of(config)
    if "record_id" in frame:  # records in id order: the same records give the same resamples, whatever the row order
        frame = frame.sort_values("record_id", kind="stable")
    frame = frame.reset_index(drop=True)
    truth = _column(frame, "ground_truth_label")
    has_truth = bool(truth.notna().any())
    resolved = _task(frame, task) if has_truth else None
    columns = _RecordColumns(frame, settings, resolved)
    metrics = _scope_metrics(columns, np.arange(len(frame)), "all", settings, full=True)
    found = list(segments(frame, settings.slices, settings.min_slice_support)) if settings.slices else []
    for segment, rows in found:
        if segment.compared:
            metrics += _scope_metrics(columns, rows.to_numpy(), segment.name, settings, full=False)
    diff = record_diff(frame, settings.thresholds, settings.top_changes, settings.noise_quantile,
                       settings.abs_tolerance, settings.rel_tolerance)
    return Comparison(
        metrics=tuple(metrics), flip_matrix=flip_matrix(frame), score_delta=score_delta(frame),
        has_ground_truth=has_truth, task=resolved, diff=diff, distributions=distributions(frame),
        segments=tuple(segment for segment, _ in found),
        settings={"confidence": settings.confidence, "bootstrap_resamples": settings.bootstrap_resamples,
                  "seed": settings.seed, "min_slice_support": settings.min_slice_support,
                  "noise_quantile": settings.noise_quantile, "thresholds": list(settings.thresholds),
                  "positive_label": columns.positive})


def flip_matrix(frame: pd.DataFrame) -> dict[str, dict[str, int]]:
    """production label -> candidate label -> records, over records both models labelled."""
    labelled = _labelled(frame)
    counts = labelled.groupby(["production_label", "candidate_label"]).size()
    matrix: dict[str, dict[str, int]] = {}
    for (production, candidate), count in sorted(counts.items()):
        matrix.setdefault(str(production), {})[str(candidate)] = int(count)
    return matrix


def score_delta(frame: pd.DataFrame) -> dict[str, float]:
    """Summary of candidate - production score over records both scored; empty when none."""
    delta = _score_pairs(frame, "candidate_score")
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
    if production.size == 0:
        return {}
    low, high = float(min(production.min(), candidate.min())), float(max(production.max(), candidate.max()))
    edges = np.linspace(low, high if high > low else low + 1.0, _HISTOGRAM_BINS + 1)
    delta = candidate - production
    d_low, d_high = float(delta.min()), float(delta.max())
    d_edges = np.linspace(d_low, d_high if d_high > d_low else d_low + 1e-9, _HISTOGRAM_BINS + 1)
    # Every k-th pair in record order (sorted by record id, so row order does not matter).
    order = np.argsort(_paired_ids(frame), kind="stable")
    pick = order[np.linspace(0, order.size - 1, min(order.size, _SCATTER_POINTS)).astype(int)]
    return {
        "score_edges": [float(e) for e in edges],
        "production_counts": [int(n) for n in np.histogram(production, edges)[0]],
        "candidate_counts": [int(n) for n in np.histogram(candidate, edges)[0]],
        "delta_edges": [float(e) for e in d_edges],
        "delta_counts": [int(n) for n in np.histogram(delta, d_edges)[0]],
        "scatter": [[round(float(production[i]), 6), round(float(candidate[i]), 6)] for i in pick],
    }


# ---------------------------------------------------------------- per-record columns, computed once

class _RecordColumns:
    """Per-record indicator and value columns (NaN-free floats) every statistic is a mean-function of."""

    def __init__(self, frame: pd.DataFrame, settings: _Settings, task: str | None):
        n = len(frame)
        self.n, self.settings, self.task = n, settings, task
        self.cols: dict[str, np.ndarray] = {}
        p_score, c_score = _numeric(frame, "production_score"), _numeric(frame, "candidate_score")
        r_score = _numeric(frame, "production_replay_score")
        p_label, c_label = _labels(frame, "production_label"), _labels(frame, "candidate_label")
        r_label, truth = _labels(frame, "production_replay_label"), _labels(frame, "ground_truth_label")
        self.p_score, self.c_score, self.truth = p_score, c_score, truth

        self.add("one", np.ones(n))
        self.add("exact", (_text(frame, "production_hash") == _text(frame, "candidate_hash")).to_numpy(bool)
                 & _text(frame, "production_hash").notna().to_numpy(bool))
        self.add("tolerant", _column(frame, "tolerant_match").astype("boolean").fillna(False).to_numpy(bool))
        scored = np.isfinite(p_score) & np.isfinite(c_score)
        delta = np.where(scored, c_score - p_score, 0.0)
        self.add("scored", scored)
        self.add("delta", delta)
        self.add("abs_delta", np.abs(delta))
        self.add("p_score", np.where(scored, p_score, 0.0))
        self.add("c_score", np.where(scored, c_score, 0.0))
        self.add("abs_ok", scored & (np.abs(delta) <= settings.abs_tolerance))
        self.add("rel_ok", scored & (np.abs(delta) <= settings.rel_tolerance *
                                     np.maximum(np.abs(np.nan_to_num(p_score)), np.abs(np.nan_to_num(c_score)))))
        crossing = np.zeros(n, dtype=bool)
        for t in settings.thresholds:
            crossing |= scored & ((p_score < t) != (c_score < t))
        self.add("crossing", crossing)
        _, _, one_sided = one_sided_fields(_text(frame, "production_raw"), _text(frame, "candidate_raw"))
        one_sided |= np.isfinite(p_score) != np.isfinite(c_score)
        one_sided |= np.array([(a is None) != (b is None) for a, b in zip(p_label, c_label)], dtype=bool)
        self.add("one_sided", one_sided)

        labelled = np.array([a is not None and b is not None for a, b in zip(p_label, c_label)], dtype=bool)
        agree = labelled & np.array([a == b for a, b in zip(p_label, c_label)], dtype=bool)
        self.add("labelled", labelled)
        self.add("agree", agree)
        self.add("flip", labelled & ~agree)
        self.kappa_classes = sorted({x for x, ok in zip(p_label, labelled) if ok} |
                                    {x for x, ok in zip(c_label, labelled) if ok})
        for k, label in enumerate(self.kappa_classes):
            self.add(f"kp{k}", labelled & np.array([x == label for x in p_label], dtype=bool))
            self.add(f"kc{k}", labelled & np.array([x == label for x in c_label], dtype=bool))

        # noise floor
        replay_raw = _text(frame, "production_replay_raw")
        replayed = replay_raw.notna().to_numpy(bool)
        self.replayed_any = bool(replayed.any())
        same = np.array([bool(r) and _same_canonical(p, a, settings.decimals)
                         for p, a, r in zip(_text(frame, "production_raw"), replay_raw, replayed)], dtype=bool)
        self.add("replayed", replayed)
        self.add("replay_same", same)
        replay_scored = replayed & np.isfinite(r_score) & np.isfinite(p_score)
        self.add("replay_scored", replay_scored)
        self.add("replay_abs_delta", np.where(replay_scored, np.abs(r_score - p_score), 0.0))
        replay_labelled = replayed & np.array([a is not None and b is not None for a, b in zip(p_label, r_label)], dtype=bool)
        self.add("replay_labelled", replay_labelled)
        self.add("replay_flip", replay_labelled & np.array([a != b for a, b in zip(p_label, r_label)], dtype=bool))
        self.noise_abs = np.where(replay_scored, np.abs(r_score - p_score), np.nan)
        self.frame = frame
        real = beyond_noise(frame, noise_band(frame, settings.noise_quantile, settings.abs_tolerance),
                            settings.abs_tolerance, settings.rel_tolerance)
        self.add("real", real)
        replay_kept = np.array([b is None or a == b for a, b in zip(p_label, r_label)], dtype=bool)
        self.add("real_flip", labelled & ~agree & replay_kept)

        # ground truth
        self.positive: str | None = None
        self.classes: tuple[list[str], list[str]] = ([], [])
        if task == "classification":
            self._classification(p_label, c_label, truth, settings)
        elif task == "regression":
            self._regression(truth)

    def add(self, name: str, values: np.ndarray) -> None:
        self.cols[name] = np.asarray(values, dtype=float)

    def _classification(self, p_label, c_label, truth, settings: _Settings) -> None:
        has = np.array([t is not None and a is not None and b is not None for t, a, b in zip(truth, p_label, c_label)], dtype=bool)
        self.add("truth_lab", has)
        self.add("p_correct", has & np.array([a == t for a, t in zip(p_label, truth)], dtype=bool))
        self.add("c_correct", has & np.array([b == t for b, t in zip(c_label, truth)], dtype=bool))
        seen_truth = {t for t, ok in zip(truth, has) if ok}
        seen = seen_truth | {x for x, ok in zip(p_label, has) if ok} | {x for x, ok in zip(c_label, has) if ok}
        if len(seen) <= 2:
            positive = settings.positive_label or ("1" if "1" in seen else (sorted(seen)[-1] if seen else None))
            self.positive = positive
            self.classes = ([positive], [positive]) if positive is not None else ([], [])
        else:  # macro average over the classes in the truth or in that model's predictions, as scikit-learn does
            self.classes = (sorted(seen_truth | {x for x, ok in zip(p_label, has) if ok}),
                            sorted(seen_truth | {x for x, ok in zip(c_label, has) if ok}))
        for label in sorted(set(self.classes[0]) | set(self.classes[1])):
            actual = has & np.array([t == label for t in truth], dtype=bool)
            self.add(f"ap:{label}", actual)
            for side, predicted in (("p", p_label), ("c", c_label)):
                said = has & np.array([x == label for x in predicted], dtype=bool)
                self.add(f"{side}pp:{label}", said)
                self.add(f"{side}tp:{label}", said & actual)
        self.auc_rows = np.isfinite(self.p_score) & np.isfinite(self.c_score) & \
            np.array([t is not None for t in truth], dtype=bool)

    def _regression(self, truth) -> None:
        values = np.array([_number(t) for t in truth], dtype=float)
        has = np.isfinite(values) & np.isfinite(self.p_score) & np.isfinite(self.c_score)
        self.add("truth_num", has)
        for side, score in (("p", self.p_score), ("c", self.c_score)):
            error = np.where(has, score - np.nan_to_num(values), 0.0)
            self.add(f"{side}_abs_err", np.abs(error))
            self.add(f"{side}_sq_err", error ** 2)


# ---------------------------------------------------------------- statistics of one scope

class _Means:
    """Column means of one scope and of its bootstrap resamples; statistics are functions of them."""

    def __init__(self, columns: _RecordColumns, rows: np.ndarray, settings: _Settings, seed: int):
        self.names = list(columns.cols)
        self.index = {name: i for i, name in enumerate(self.names)}
        matrix = np.column_stack([columns.cols[name][rows] for name in self.names]) if len(rows) else \
            np.zeros((0, len(self.names)))
        self.n = len(rows)
        self.point = matrix.mean(axis=0) if self.n else np.full(len(self.names), np.nan)
        self.confidence = settings.confidence
        self.boot = stats.bootstrap_means(matrix, settings.bootstrap_resamples, seed) \
            if self.n >= 2 and settings.bootstrap_resamples > 0 else None

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
    abs_delta = columns.cols["abs_delta"][rows][columns.cols["scored"][rows] > 0]
    out.append(MetricValue("p95_abs_score_delta", float(np.quantile(abs_delta, 0.95)) if abs_delta.size else None,
                           slice=slice_name, support=int(abs_delta.size)))
    out.append(MetricValue("max_abs_score_delta", float(abs_delta.max()) if abs_delta.size else None,
                           slice=slice_name, support=int(abs_delta.size)))
    out.append(_per_model(means, "mean_score", lambda m: m("p_score") / m("scored"),
                          lambda m: m("c_score") / m("scored"), scored, slice_name))
    both = columns.cols["scored"][rows] > 0
    production_scores, candidate_scores = columns.p_score[rows][both], columns.c_score[rows][both]
    ks, ks_p = stats.ks_2samp(production_scores, candidate_scores)
    support = int(both.sum())
    out += [MetricValue("score_psi", stats.psi(production_scores, candidate_scores, settings.psi_bins),
                        slice=slice_name, support=support),
            MetricValue("score_ks", ks, slice=slice_name, support=support),
            MetricValue("score_ks_p_value", ks_p, slice=slice_name, support=support)]

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
    assert n == len(rows)
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
    production_only_wrong = int(np.sum((columns.cols["c_correct"][rows] > 0) & (columns.cols["p_correct"][rows] == 0)
                                       & (columns.cols["truth_lab"][rows] > 0)))
    candidate_only_wrong = int(np.sum((columns.cols["p_correct"][rows] > 0) & (columns.cols["c_correct"][rows] == 0)
                                      & (columns.cols["truth_lab"][rows] > 0)))
    out.append(MetricValue("mcnemar_p_value", stats.mcnemar_exact(production_only_wrong, candidate_only_wrong)
                           if count else None, slice=slice_name, support=production_only_wrong + candidate_only_wrong))
    out.append(_roc_auc(columns, rows, slice_name, settings, full))
    return out


def _roc_auc(columns: _RecordColumns, rows: np.ndarray, slice_name: str, settings: _Settings,
             full: bool) -> MetricValue:
    """ROC AUC of each model's score for the positive class; the delta's interval on the whole run only."""
    if columns.positive is None:
        return MetricValue("roc_auc", None, slice=slice_name)
    keep = rows[columns.auc_rows[rows]]
    positive = np.array([columns.truth[i] == columns.positive for i in keep], dtype=bool)
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


def _task(frame: pd.DataFrame, task: Task) -> Literal["classification", "regression"]:
    """Classification when the models give labels and the truth looks categorical, else regression."""
    if task != "auto":
        return task
    truth = frame["ground_truth_label"].dropna().unique()
    numbers = [number_from_text(str(value)) for value in truth]
    if any(number is None for number in numbers):
        return "classification"
    categorical = all(float(number).is_integer() for number in numbers) and len(numbers) <= _MAX_CLASSES
    labelled = bool(_column(frame, "candidate_label").notna().any())
    scored = bool(_column(frame, "candidate_score").notna().any())
    if categorical and labelled:
        return "classification"
    return "regression" if scored else "classification"


def _same_canonical(captured: str | None, replayed: str | None, decimals: int) -> bool:
    if captured is None or replayed is None:
        return False
    canonical = canonical_text(captured, decimals)
    return canonical is not None and canonical == canonical_text(replayed, decimals)


def _labelled(frame: pd.DataFrame) -> pd.DataFrame:
    production, candidate = _text(frame, "production_label"), _text(frame, "candidate_label")
    both = production.notna() & candidate.notna()
    return pd.DataFrame({"production_label": production[both].astype(str),
                         "candidate_label": candidate[both].astype(str)})


def _paired_scores(frame: pd.DataFrame, other: str) -> tuple[np.ndarray, np.ndarray]:
    production, against = _numeric(frame, "production_score"), _numeric(frame, other)
    both = np.isfinite(production) & np.isfinite(against)
    return production[both], against[both]


def _paired_ids(frame: pd.DataFrame) -> np.ndarray:
    both = np.isfinite(_numeric(frame, "production_score")) & np.isfinite(_numeric(frame, "candidate_score"))
    ids = _text(frame, "record_id").fillna("").to_numpy(str)
    return ids[both]


def _score_pairs(frame: pd.DataFrame, other: str) -> np.ndarray:
    production, against = _paired_scores(frame, other)
    return against - production


def _numeric(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name not in frame:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(float, na_value=np.nan)


def _labels(frame: pd.DataFrame, name: str) -> list[str | None]:
    return list(_text(frame, name))


def _text(frame: pd.DataFrame, name: str) -> pd.Series:
    if name not in frame:
        return pd.Series([None] * len(frame), index=frame.index, dtype=object)
    return pd.Series([None if _missing(v) else str(v) for v in frame[name]], index=frame.index, dtype=object)


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value))


def _number(value: str | None) -> float:
    number = number_from_text(value) if value is not None else None
    return float(number) if number is not None else np.nan


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    return frame[name] if name in frame else pd.Series([None] * len(frame), index=frame.index, dtype=object)
