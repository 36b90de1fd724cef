"""Paired comparison of production and candidate answers over the joined records.

Both models answered the same records, so every statistic is paired by construction.
Every metric the comparison can produce is declared in METRICS (the gate names them);
a test proves each declared metric has a case.
"""
from __future__ import annotations

import dataclasses
from typing import Literal, Protocol

import numpy as np
import pandas as pd

from analysis.canonical import number_from_text
from analysis.outputs import canonical_text
from analysis.results import Comparison, MetricValue

Kind = Literal["paired", "per_model", "noise_floor"]
Task = Literal["auto", "classification", "regression"]
# Integer ground truth with at most this many distinct values is taken as class labels.
_MAX_CLASSES = 20
SCORE_DELTA_STATS = ("mean", "std", "min", "p01", "p05", "p50", "p95", "p99", "max", "mean_abs")


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    description: str
    kind: Kind
    higher_is_better: bool | None


METRICS: dict[str, MetricSpec] = {
    "exact_match_rate": MetricSpec("share of records whose canonical answers hash alike", "paired", True),
    "tolerant_match_rate": MetricSpec("share of records whose answers match within the tolerances", "paired", True),
    "label_agreement": MetricSpec("share of labelled records where both models give the same label", "paired", True),
    "cohen_kappa": MetricSpec("label agreement corrected for chance (Cohen's kappa)", "paired", True),
    "label_flip_rate": MetricSpec("share of labelled records whose label changed", "paired", False),
    "mean_abs_score_delta": MetricSpec("mean |candidate score - production score|", "paired", False),
    "max_abs_score_delta": MetricSpec("largest |candidate score - production score|", "paired", False),
    "mean_score": MetricSpec("mean score of each model over records both scored", "per_model", None),
    "accuracy": MetricSpec("share of records whose label equals the ground truth", "per_model", True),
    "mae": MetricSpec("mean absolute error of the score against numeric ground truth", "per_model", False),
    "rmse": MetricSpec("root mean squared error of the score against numeric ground truth", "per_model", False),
    "replay_exact_match_rate": MetricSpec(
        "share of records where production replayed offline hashes like its captured answer (noise floor)",
        "noise_floor", True),
    "replay_mean_abs_score_delta": MetricSpec(
        "mean |replayed production score - captured production score| (noise floor)", "noise_floor", False),
}


class CompareSpec(Protocol):
    """What compare reads of steps.config.CompareConfig (the core does not import steps)."""

    @property
    def decimals(self) -> int: ...


def compare(frame: pd.DataFrame, config: CompareSpec, task: Task = "auto") -> Comparison:
    """All declared metrics over joined records (shadow_records columns), for the slice `all`."""
    truth = _column(frame, "ground_truth_label")
    has_truth = bool(truth.notna().any())
    metrics = _paired_metrics(frame) + _noise_floor_metrics(frame, config.decimals)
    if has_truth:
        metrics += _ground_truth_metrics(frame, _task(frame, task))
    return Comparison(metrics=tuple(metrics), flip_matrix=flip_matrix(frame), score_delta=score_delta(frame),
                      has_ground_truth=has_truth)


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


def _paired_metrics(frame: pd.DataFrame) -> list[MetricValue]:
    rows = len(frame)
    exact = _rate(frame["production_hash"] == frame["candidate_hash"]) if rows else None
    tolerant = _rate(_column(frame, "tolerant_match").astype("boolean").fillna(False)) if rows else None
    labelled = _labelled(frame)
    agreement = _rate(labelled["production_label"] == labelled["candidate_label"]) if len(labelled) else None
    delta = np.abs(_score_pairs(frame, "candidate_score"))
    production, candidate = _paired_scores(frame, "candidate_score")
    return [
        MetricValue("exact_match_rate", exact, support=rows),
        MetricValue("tolerant_match_rate", tolerant, support=rows),
        MetricValue("label_agreement", agreement, support=len(labelled)),
        MetricValue("cohen_kappa", _cohen_kappa(labelled["production_label"], labelled["candidate_label"]),
                    support=len(labelled)),
        MetricValue("label_flip_rate", None if agreement is None else 1.0 - agreement, support=len(labelled)),
        MetricValue("mean_abs_score_delta", float(delta.mean()) if delta.size else None, support=int(delta.size)),
        MetricValue("max_abs_score_delta", float(delta.max()) if delta.size else None, support=int(delta.size)),
        _per_model("mean_score", _mean(production), _mean(candidate), int(delta.size)),
    ]


def _noise_floor_metrics(frame: pd.DataFrame, decimals: int) -> list[MetricValue]:
    replayed = frame[_column(frame, "production_replay_raw").notna()]
    if replayed.empty:
        return []
    # shadow_records keeps no hash of the replayed answer: canonicalise both raw texts the same way.
    same = [_same_canonical(captured, again, decimals)
            for captured, again in zip(replayed["production_raw"], replayed["production_replay_raw"])]
    delta = np.abs(_score_pairs(replayed, "production_replay_score"))
    return [
        MetricValue("replay_exact_match_rate", float(np.mean(same)), support=len(replayed)),
        MetricValue("replay_mean_abs_score_delta", float(delta.mean()) if delta.size else None,
                    support=int(delta.size)),
    ]


def _ground_truth_metrics(frame: pd.DataFrame, task: Literal["classification", "regression"]) -> list[MetricValue]:
    truthful = frame[frame["ground_truth_label"].notna()]
    if task == "classification":
        both = truthful[truthful["production_label"].notna() & truthful["candidate_label"].notna()]
        truth = both["ground_truth_label"]
        return [_per_model("accuracy", _rate(both["production_label"] == truth) if len(both) else None,
                           _rate(both["candidate_label"] == truth) if len(both) else None, len(both))]
    truth = pd.to_numeric(truthful["ground_truth_label"], errors="coerce")
    scored = truthful.assign(truth=truth)
    scored = scored[scored["truth"].notna() & scored["production_score"].notna() & scored["candidate_score"].notna()]
    production_error = scored["production_score"].to_numpy(float) - scored["truth"].to_numpy(float)
    candidate_error = scored["candidate_score"].to_numpy(float) - scored["truth"].to_numpy(float)
    support = len(scored)
    return [
        _per_model("mae", *(_mean(np.abs(error)) for error in (production_error, candidate_error)), support),
        _per_model("rmse", *(_root_mean_square(error) for error in (production_error, candidate_error)), support),
    ]


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


def _same_canonical(captured: str, replayed: str, decimals: int) -> bool:
    canonical = canonical_text(captured, decimals)
    return canonical is not None and canonical == canonical_text(replayed, decimals)


def _cohen_kappa(production: pd.Series, candidate: pd.Series) -> float | None:
    total = len(production)
    if total == 0:
        return None
    observed = float((production.to_numpy() == candidate.to_numpy()).mean())
    production_share = production.value_counts() / total
    candidate_share = candidate.value_counts() / total
    expected = float((production_share * candidate_share.reindex(production_share.index, fill_value=0)).sum())
    if expected == 1.0:
        return None  # both models gave one and the same label throughout: kappa is undefined
    return (observed - expected) / (1.0 - expected)


def _per_model(name: str, production: float | None, candidate: float | None, support: int) -> MetricValue:
    delta = None if production is None or candidate is None else candidate - production
    return MetricValue(name, candidate, production=production, candidate=candidate, delta=delta, support=support)


def _labelled(frame: pd.DataFrame) -> pd.DataFrame:
    production, candidate = _column(frame, "production_label"), _column(frame, "candidate_label")
    both = production.notna() & candidate.notna()
    return pd.DataFrame({"production_label": production[both].astype(str),
                         "candidate_label": candidate[both].astype(str)})


def _paired_scores(frame: pd.DataFrame, other: str) -> tuple[np.ndarray, np.ndarray]:
    production = pd.to_numeric(_column(frame, "production_score"), errors="coerce").to_numpy(float, na_value=np.nan)
    against = pd.to_numeric(_column(frame, other), errors="coerce").to_numpy(float, na_value=np.nan)
    both = np.isfinite(production) & np.isfinite(against)
    return production[both], against[both]


def _score_pairs(frame: pd.DataFrame, other: str) -> np.ndarray:
    production, against = _paired_scores(frame, other)
    return against - production


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    return frame[name] if name in frame else pd.Series([None] * len(frame), index=frame.index, dtype=object)


def _rate(matches: pd.Series) -> float:
    return float(matches.astype(bool).mean())


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def _root_mean_square(values: np.ndarray) -> float | None:
    return float(np.sqrt((values**2).mean())) if values.size else None
