"""Operational comparison: latency, throughput and errors of the candidate next to production.

Both sides were sent the same mini-batches (same replay files, same knobs), so every figure is
paired by batch. A batch is named by its replay group, file and first line; it pairs when both
sides sent it with the same number of lines. Intervals come from a paired bootstrap over
batches: resampling whole pairs keeps what a batch is (its size, its records) matched across the
sides, so the spread reflects the models and the measurement, not which batches were drawn. Ratios
of quantiles have no usable closed-form interval, hence the bootstrap (percentile method, seeded,
as every other interval of the comparison).

Latency is the wall time of the attempt that got the answer; per record, that time over the
batch's records, every record counted once (quantiles weighted by records). A batch that failed on
every attempt has no latency: it counts in failed_invocation_rate, and latency statistics use the
batches both sides answered. error_rate and timeout_rate count attempts, retries included.
Throughput is records per second of invocation time (the wall figure also depends on concurrency).

Noise reference: production's captured latency is unknown, so production measured twice — a
sample of its batches replayed again in a fresh server (side production_repeat) — gives the same
ratios for production against itself (`replay_*`). A candidate ratio inside that spread is noise.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd

from analysis.compare import MetricSpec
from analysis.results import MetricValue

SIDES = ("candidate", "production", "production_repeat")
QUANTILES = (50, 90, 99)
PAIR_KEY = ("replay_group", "replay_file", "first_line", "lines")
_BLOCK = 1_000_000
"""At most this many resample weights in memory at once (resamples x pairs)."""
_HISTOGRAM_BINS = 30


def _ratio_metrics() -> dict[str, MetricSpec]:
    specs = {}
    for q in QUANTILES:
        specs[f"p{q}_latency_ratio"] = MetricSpec(
            f"candidate / production {q}th percentile of latency per invocation, on batches both answered",
            "paired", False, "value")
        specs[f"p{q}_record_latency_ratio"] = MetricSpec(
            f"candidate / production {q}th percentile of latency per record, on batches both answered",
            "paired", False, "value")
    specs["throughput_ratio"] = MetricSpec(
        "candidate / production records per second of invocation time, on batches both answered", "paired", True,
        "value")
    return specs


_RATIOS = _ratio_metrics()
OPERATIONAL_METRICS: dict[str, MetricSpec] = {
    **_RATIOS,
    "error_rate": MetricSpec("share of attempts that failed (non-200, timeout, connection), retries included",
                             "per_model", False, "delta"),
    "timeout_rate": MetricSpec("share of attempts that timed out, retries included", "per_model", False, "delta"),
    "failed_invocation_rate": MetricSpec("share of batches that failed on every attempt", "per_model", False,
                                         "delta"),
    "server_start_seconds": MetricSpec("seconds from starting the model server to its first healthy /ping "
                                       "(slowest replay group)", "per_model", False),
    "server_peak_rss_mb": MetricSpec("peak resident memory of the model server process, MiB (largest group)",
                                     "per_model", False),
    "transform_duration_ratio": MetricSpec("cloud: candidate / production Batch Transform job duration, groups both "
                                           "ran", "paired", False),
    "transform_model_latency_ratio": MetricSpec("cloud: candidate / production mean CloudWatch ModelLatency of the "
                                                "transform jobs", "paired", False),
    "transform_error_rate": MetricSpec("cloud: Invocation4XXErrors + Invocation5XXErrors over Invocations of the "
                                       "transform jobs", "per_model", False),
    **{f"replay_{name}": MetricSpec(f"{spec.description.replace('candidate / production', 'production again / production')}"
                                    " (noise reference)", "noise_floor", None, "value")
       for name, spec in _RATIOS.items()},
}
"""Every metric operational comparison can produce; gate checks may name any of them."""


@dataclasses.dataclass(frozen=True)
class Settings:
    resamples: int
    confidence: float
    seed: int


@dataclasses.dataclass(frozen=True)
class Sample:
    """One side's batches, aligned with another side's: position i is the same batch on both."""

    records: np.ndarray
    latency: np.ndarray
    """Seconds of the answering attempt; NaN where the batch failed."""
    ok: np.ndarray
    attempts: np.ndarray
    errors: np.ndarray
    timeouts: np.ndarray

    @classmethod
    def of(cls, frame: pd.DataFrame) -> Sample:
        ok = (frame["outcome"] == "ok").to_numpy()
        latency = pd.to_numeric(frame["latency_s"], errors="coerce").to_numpy(dtype=float)
        return cls(frame["records"].to_numpy(dtype=float), np.where(ok, latency, np.nan), ok,
                   frame["attempts"].to_numpy(dtype=float), frame["errors"].to_numpy(dtype=float),
                   frame["timeouts"].to_numpy(dtype=float))

    def take(self, index: np.ndarray) -> Sample:
        return Sample(*(getattr(self, f.name)[index] for f in dataclasses.fields(self)))


@dataclasses.dataclass(frozen=True)
class Operational:
    """The metrics the gate can judge, and what the report shows (per-side table, histogram, pairing)."""

    metrics: tuple[MetricValue, ...]
    summary: dict[str, Any]


def compare_operational(invocations: pd.DataFrame, servers: list[dict[str, Any]], settings: Settings) -> Operational:
    """Per-side summaries, and the candidate against production (and production against itself), paired."""
    frames = {side: invocations[invocations["side"] == side].reset_index(drop=True) for side in SIDES}
    if frames["candidate"].empty:
        return Operational((), {})
    metrics: list[MetricValue] = []
    pairing: dict[str, Any] = {}
    candidate, production = frames["candidate"], frames["production"]
    if production.empty:
        metrics += _rates_one_side(Sample.of(candidate))
    else:
        x, y, pairing["candidate"] = pair(candidate, production)
        metrics += paired_metrics(x, y, settings, prefix="", rates=True)
    if not production.empty and not frames["production_repeat"].empty:
        x, y, pairing["production_repeat"] = pair(frames["production_repeat"], production)
        metrics += paired_metrics(x, y, dataclasses.replace(settings, seed=settings.seed + 1), prefix="replay_",
                                  rates=False)
    metrics += _server_metrics(servers)
    summary = {
        "sides": {side: side_summary(frame, [s for s in servers if s.get("side") == side])
                  for side, frame in frames.items() if not frame.empty},
        "pairing": pairing,
        "histogram": record_latency_histogram(frames),
        "settings": dataclasses.asdict(settings),
    }
    return Operational(tuple(metrics), summary)


def pair(first: pd.DataFrame, second: pd.DataFrame) -> tuple[Sample, Sample, dict[str, int]]:
    """The batches both sides sent, aligned by PAIR_KEY; counts of what paired and what did not."""
    key = list(PAIR_KEY)
    left = first.reset_index(drop=True).assign(_left=lambda f: np.arange(len(f)))
    right = second.reset_index(drop=True).assign(_right=lambda f: np.arange(len(f)))
    joined = left[key + ["_left"]].merge(right[key + ["_right"]], on=key, how="inner", validate="one_to_one")
    joined = joined.sort_values(["_left"], kind="stable")
    x = Sample.of(first.reset_index(drop=True)).take(joined["_left"].to_numpy())
    y = Sample.of(second.reset_index(drop=True)).take(joined["_right"].to_numpy())
    counts = {"paired": len(joined), "unpaired_this_side": len(first) - len(joined),
              "unpaired_production": len(second) - len(joined), "both_answered": int(np.sum(x.ok & y.ok))}
    return x, y, counts


def paired_metrics(x: Sample, y: Sample, settings: Settings, prefix: str, rates: bool) -> list[MetricValue]:
    """x against y (y is production): quantile and throughput ratios, and (rates) error rate differences."""
    n = len(x.records)
    statistics: list[tuple[str, Callable[[np.ndarray], dict[str, np.ndarray]], str]] = []
    both = x.ok & y.ok
    answered = np.flatnonzero(both)
    for q in QUANTILES:
        statistics.append((f"p{q}_latency_ratio", _quantile_ratio(x, y, answered, q / 100, per_record=False),
                           "value"))
        statistics.append((f"p{q}_record_latency_ratio", _quantile_ratio(x, y, answered, q / 100, per_record=True),
                           "value"))
    statistics.append(("throughput_ratio", _throughput_ratio(x, y, answered), "value"))
    if rates:
        statistics.append(("error_rate", _rate(x.errors, x.attempts, y.errors, y.attempts), "delta"))
        statistics.append(("timeout_rate", _rate(x.timeouts, x.attempts, y.timeouts, y.attempts), "delta"))
        failed_x, failed_y = (~x.ok).astype(float), (~y.ok).astype(float)
        statistics.append(("failed_invocation_rate", _rate(failed_x, np.ones(n), failed_y, np.ones(n)), "delta"))
    out = []
    for name, statistic, bounded in statistics:
        support = len(answered) if name.endswith("_ratio") else n
        estimate = statistic(np.ones((1, n)))
        low = high = None
        if support >= 2 and settings.resamples > 0:
            draws = np.concatenate([statistic(counts)[bounded] for counts in resample_counts(n, settings.resamples,
                                                                                             settings.seed)])
            low, high = percentile_interval(draws, settings.confidence)
        first = {k: _scalar(v) for k, v in estimate.items()}
        out.append(MetricValue(prefix + name, first["value"], production=first["production"],
                               candidate=first["candidate"], delta=first.get("delta"), ci_low=low, ci_high=high,
                               support=support))
    return out


def resample_counts(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Bootstrap resamples of n pairs as counts (resamples x n), in blocks; the draws statistics.bootstrap_means makes."""
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK // max(n, 1))
    for start in range(0, resamples, block):
        size = min(block, resamples - start)
        picks = rng.integers(0, n, size=(size, n)) + n * np.arange(size)[:, None]
        yield np.bincount(picks.ravel(), minlength=size * n).reshape(size, n)


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float, order: np.ndarray | None = None) -> np.ndarray:
    """Per row of integer weights, np.quantile(np.repeat(values, weights), q) (linear), without repeating.

    weights is (rows, n) or (n,); a row of zero weights gives NaN. `order` (an argsort of values) may be
    passed to sort once for many calls.
    """
    values = np.asarray(values, dtype=float)
    weights = np.atleast_2d(np.asarray(weights, dtype=float))
    if values.size == 0:
        return np.full(weights.shape[0], np.nan)
    order = np.argsort(values, kind="stable") if order is None else order
    ordered, cumulative = values[order], np.cumsum(weights[:, order], axis=1)
    total = cumulative[:, -1]
    position = np.maximum(total - 1, 0) * q
    low = np.floor(position)
    fraction = position - low
    high = np.minimum(low + 1, np.maximum(total - 1, 0))
    # The element holding sorted position p is the first whose cumulative weight exceeds p.
    at_low = np.minimum((cumulative <= low[:, None]).sum(axis=1), values.size - 1)
    at_high = np.minimum((cumulative <= high[:, None]).sum(axis=1), values.size - 1)
    result = ordered[at_low] + fraction * (ordered[at_high] - ordered[at_low])
    return np.where(total > 0, result, np.nan)


def percentile_interval(draws: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    """The bootstrap percentile interval; none when fewer than half the resamples are defined."""
    finite = draws[np.isfinite(draws)]
    if finite.size == 0 or finite.size * 2 < draws.size:
        return None, None
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    return float(low), float(high)


def _quantile_ratio(x: Sample, y: Sample, answered: np.ndarray, q: float, per_record: bool):
    records = x.records[answered]
    xs, ys = x.latency[answered], y.latency[answered]
    if per_record:
        xs, ys = xs / records, ys / records
    scale = records if per_record else np.ones_like(records)
    x_order, y_order = np.argsort(xs, kind="stable"), np.argsort(ys, kind="stable")

    def statistic(counts: np.ndarray) -> dict[str, np.ndarray]:
        weights = counts[:, answered] * scale
        candidate = weighted_quantile(xs, weights, q, x_order)
        production = weighted_quantile(ys, weights, q, y_order)
        return {"value": _divide(candidate, production), "candidate": candidate, "production": production}
    return statistic


def _throughput_ratio(x: Sample, y: Sample, answered: np.ndarray):
    records, xs, ys = x.records[answered], x.latency[answered], y.latency[answered]

    def statistic(counts: np.ndarray) -> dict[str, np.ndarray]:
        weights = counts[:, answered]
        done = weights @ records
        candidate, production = _divide(done, weights @ xs), _divide(done, weights @ ys)
        return {"value": _divide(candidate, production), "candidate": candidate, "production": production}
    return statistic


def _rate(x_events: np.ndarray, x_trials: np.ndarray, y_events: np.ndarray, y_trials: np.ndarray):
    def statistic(counts: np.ndarray) -> dict[str, np.ndarray]:
        candidate = _divide(counts @ x_events, counts @ x_trials)
        production = _divide(counts @ y_events, counts @ y_trials)
        return {"value": candidate, "candidate": candidate, "production": production, "delta": candidate - production}
    return statistic


def _rates_one_side(x: Sample) -> list[MetricValue]:
    """Without production replayed: the candidate's own rates, nothing to compare them with."""
    n = len(x.records)
    return [MetricValue(name, _scalar(_divide(np.sum(events), np.sum(trials))), candidate=_scalar(
        _divide(np.sum(events), np.sum(trials))), support=n)
        for name, events, trials in (("error_rate", x.errors, x.attempts), ("timeout_rate", x.timeouts, x.attempts),
                                     ("failed_invocation_rate", (~x.ok).astype(float), np.ones(n)))]


def _server_metrics(servers: list[dict[str, Any]]) -> list[MetricValue]:
    def worst(side: str, key: str, scale: float) -> float | None:
        values = [s[key] for s in servers if s.get("side") == side and s.get(key) is not None]
        return max(values) / scale if values else None

    out = []
    for name, key, scale in (("server_start_seconds", "start_seconds", 1.0),
                             ("server_peak_rss_mb", "peak_rss_bytes", 1024.0 * 1024.0)):
        candidate, production = worst("candidate", key, scale), worst("production", key, scale)
        if candidate is None:
            continue
        delta = candidate - production if production is not None else None
        out.append(MetricValue(name, candidate, production=production, candidate=candidate, delta=delta,
                               support=sum(1 for s in servers if s.get("side") in ("candidate", "production"))))
    return out


def side_summary(frame: pd.DataFrame, servers: list[dict[str, Any]]) -> dict[str, Any]:
    """One side's figures over every batch it sent (paired or not)."""
    sample = Sample.of(frame)
    answered = sample.ok
    latency, records = sample.latency[answered], sample.records[answered]
    per_record = latency / records if len(records) else latency
    seconds = float(np.sum(latency))
    transform_seconds = sum(s.get("transform_seconds") or 0.0 for s in servers) or None
    summary: dict[str, Any] = {
        "invocations": int(len(frame)),
        "attempts": int(sample.attempts.sum()),
        "retries": int(frame["retries"].sum()),
        "errors": int(sample.errors.sum()),
        "timeouts": int(sample.timeouts.sum()),
        "failed_invocations": int((~answered).sum()),
        "records": int(sample.records.sum()),
        "records_answered": int(records.sum()),
        "payload_bytes": int(frame["payload_bytes"].sum()),
        "error_rate": _scalar(_divide(sample.errors.sum(), sample.attempts.sum())),
        "timeout_rate": _scalar(_divide(sample.timeouts.sum(), sample.attempts.sum())),
        "throughput_records_per_s": _scalar(_divide(records.sum(), seconds)),
        "wall_records_per_s": _scalar(_divide(records.sum(), transform_seconds)) if transform_seconds else None,
        "server_start_seconds": _max_of(servers, "start_seconds"),
        "server_peak_rss_bytes": _max_of(servers, "peak_rss_bytes"),
        "external_container": bool(servers) and all(s.get("external") for s in servers),
    }
    ones = np.ones(len(latency))
    for q in QUANTILES:
        summary[f"p{q}_latency_s"] = _scalar(weighted_quantile(latency, ones, q / 100))
        summary[f"p{q}_record_latency_s"] = _scalar(weighted_quantile(per_record, records, q / 100))
    summary["max_latency_s"] = float(latency.max()) if len(latency) else None
    summary["mean_latency_s"] = float(latency.mean()) if len(latency) else None
    return summary


def record_latency_histogram(frames: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """Latency per record of every answered batch, records counted, on log-spaced edges shared by the sides."""
    per_side = {}
    for side, frame in frames.items():
        sample = Sample.of(frame)
        per_side[side] = (sample.latency[sample.ok] / sample.records[sample.ok], sample.records[sample.ok])
    values = np.concatenate([v for v, _ in per_side.values()]) if per_side else np.array([])
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        return {}
    low, high = float(values.min()), float(values.max())
    high = high if high > low else low * 1.01
    edges = np.geomspace(low, high, _HISTOGRAM_BINS + 1)
    counts = {side: np.histogram(np.clip(v, low, high), bins=edges, weights=w)[0].astype(int).tolist()
              for side, (v, w) in per_side.items() if v.size}
    return {"edges_s": edges.tolist(), "counts": counts}


def _divide(numerator: Any, denominator: Any) -> np.ndarray:
    numerator, denominator = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.nan)


def _scalar(value: Any) -> float | None:
    value = float(np.asarray(value, dtype=float).reshape(-1)[0]) if np.size(value) else math.nan
    return value if math.isfinite(value) else None


def _max_of(servers: list[dict[str, Any]], key: str) -> float | None:
    values = [s[key] for s in servers if s.get(key) is not None]
    return max(values) if values else None


def transform_job_metrics(jobs: list[dict[str, Any]]) -> list[MetricValue]:
    """Cloud figures (steps.transform_metrics jobs): candidate against production over the groups both replayed."""
    by_side = {side: {j["group"]: j for j in jobs if j["side"] == side} for side in ("candidate", "production")}
    groups = sorted(set(by_side["candidate"]) & set(by_side["production"]))
    if not groups:
        return []

    def total(side: str, key: str) -> float | None:
        values = [by_side[side][g].get(key) for g in groups]
        return None if any(v is None for v in values) else float(sum(values))

    out = []
    for name, key in (("transform_duration_ratio", "duration_s"), ("transform_model_latency_ratio",
                                                                   "model_latency_ms_avg")):
        candidate, production = total("candidate", key), total("production", key)
        ratio = candidate / production if candidate is not None and production else None
        out.append(MetricValue(name, ratio, production=production, candidate=candidate, support=len(groups)))
    rates = {}
    for side in ("candidate", "production"):
        errors = [total(side, "invocation_4xx_errors"), total(side, "invocation_5xx_errors")]
        calls = total(side, "invocations")
        rates[side] = sum(errors) / calls if None not in errors and calls else None
    delta = rates["candidate"] - rates["production"] if None not in rates.values() else None
    out.append(MetricValue("transform_error_rate", rates["candidate"], production=rates["production"],
                           candidate=rates["candidate"], delta=delta, support=len(groups)))
    return out
