"""The typed, record-level diff of two answers to the same records.

Per record the join already has each side's canonical hash, exact and tolerant match, score and
label. This module adds what a reviewer asks next: how many scores crossed a decision threshold
and in which direction, which records changed most (with their inputs), which output fields exist
on one side only, and which differences exceed the replay noise floor. Values in, values out.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

_TEXT_LIMIT = 300


@dataclasses.dataclass(frozen=True)
class ThresholdCrossing:
    """Records whose score is on different sides of `threshold` for production and candidate."""

    threshold: float
    up: int
    """production < threshold <= candidate."""
    down: int
    """candidate < threshold <= production."""
    scored: int

    @property
    def crossed(self) -> int:
        return self.up + self.down


@dataclasses.dataclass(frozen=True)
class ChangedRecord:
    """One of the records that changed most, with what the models were asked and answered."""

    record_id: str
    input_text: str | None
    production_raw: str | None
    candidate_raw: str | None
    production_score: float | None
    candidate_score: float | None
    production_label: str | None
    candidate_label: str | None
    score_delta: float | None
    noise_abs_diff: float | None
    beyond_noise: bool


@dataclasses.dataclass(frozen=True)
class RecordDiff:
    """What the typed diff found over a run's joined records."""

    records: int
    exact: int
    tolerant: int
    crossings: tuple[ThresholdCrossing, ...]
    top_changes: tuple[ChangedRecord, ...]
    fields_only_production: dict[str, int]
    """Output field path -> records whose production answer has it and the candidate's does not."""
    fields_only_candidate: dict[str, int]
    records_one_sided: int
    """Records with at least one output field (or a score, or a label) on one side only."""
    noise_band: float | None
    """A score change up to this is replay noise: the configured quantile of |replayed - captured| production."""
    beyond_noise: int
    """Records whose difference from production is larger than replay noise explains."""
    noise_records: int
    """Records with a replayed production answer (the noise floor's support)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "records": self.records, "exact": self.exact, "tolerant": self.tolerant,
            "crossings": [{**dataclasses.asdict(c), "crossed": c.crossed} for c in self.crossings],
            "top_changes": [dataclasses.asdict(r) for r in self.top_changes],
            "fields_only_production": dict(self.fields_only_production),
            "fields_only_candidate": dict(self.fields_only_candidate),
            "records_one_sided": self.records_one_sided,
            "noise_band": self.noise_band, "beyond_noise": self.beyond_noise, "noise_records": self.noise_records,
        }


def threshold_crossings(production: np.ndarray, candidate: np.ndarray,
                        thresholds: tuple[float, ...]) -> tuple[ThresholdCrossing, ...]:
    """For each threshold, how many paired scores moved across it, up and down."""
    production, candidate = np.asarray(production, float), np.asarray(candidate, float)
    both = np.isfinite(production) & np.isfinite(candidate)
    p, c = production[both], candidate[both]
    return tuple(ThresholdCrossing(float(t), int(np.sum((p < t) & (c >= t))), int(np.sum((c < t) & (p >= t))),
                                   int(both.sum())) for t in thresholds)


def noise_band(frame: pd.DataFrame, quantile: float, abs_tolerance: float) -> float | None:
    """The score change replay noise explains: `quantile` of |replayed - captured production|, at least the tolerance.

    None when production was not replayed (no noise floor: only the tolerance applies).
    """
    return noise_band_of(_numeric(frame, "noise_abs_diff"), _numeric(frame, "production_replay_score"),
                         _numeric(frame, "production_score"), quantile, abs_tolerance)


def noise_band_of(noise: np.ndarray, replay_score: np.ndarray, production_score: np.ndarray, quantile: float,
                  abs_tolerance: float) -> float | None:
    """noise_band over per-record arrays: the join's noise_abs_diff, else |replayed - captured| production score."""
    if not np.isfinite(noise).any():  # frames built without the join's column: derive it
        noise = np.abs(replay_score - production_score)
    noise = noise[np.isfinite(noise)]
    if noise.size == 0:
        return None
    return max(float(np.quantile(noise, quantile)), abs_tolerance)


def beyond_noise(frame: pd.DataFrame, band: float | None, abs_tolerance: float, rel_tolerance: float) -> np.ndarray:
    """Per record: does the candidate differ from production by more than replay noise explains?

    A label flip is real unless replayed production flipped the same record too, or its score moved within
    the noise band (noise near the threshold flips records at random). A score change is
    real when it exceeds the noise band (or, without a noise floor, both tolerances). A record whose
    answers hash alike is never a difference; one without labels or scores counts when its hash differs
    and the tolerant comparison failed.
    """
    n = len(frame)
    if n == 0:
        return np.zeros(0, dtype=bool)
    production_label = text_values(frame, "production_label")
    candidate_label = text_values(frame, "candidate_label")
    replay_label = text_values(frame, "production_replay_label")
    labelled = (production_label.notna() & candidate_label.notna()).to_numpy(bool)
    flipped = labelled & (production_label != candidate_label).to_numpy(bool)
    replay_flipped = (replay_label.notna() & production_label.notna()
                      & (replay_label != production_label)).to_numpy(bool)
    same_hash = (text_values(frame, "production_hash") == text_values(frame, "candidate_hash")).to_numpy(bool)
    tolerant = frame["tolerant_match"].astype("boolean").fillna(False).to_numpy(bool) \
        if "tolerant_match" in frame else np.zeros(n, bool)
    return beyond_noise_of(_numeric(frame, "production_score"), _numeric(frame, "candidate_score"), labelled,
                           flipped & ~replay_flipped, same_hash, tolerant, band, abs_tolerance, rel_tolerance)


def beyond_noise_of(production_score: np.ndarray, candidate_score: np.ndarray, labelled: np.ndarray,
                    label_real: np.ndarray, same_hash: np.ndarray, tolerant: np.ndarray, band: float | None,
                    abs_tolerance: float, rel_tolerance: float) -> np.ndarray:
    """beyond_noise over per-record arrays (label_real: flipped where replayed production did not flip)."""
    p, c = production_score, candidate_score
    scored = np.isfinite(p) & np.isfinite(c)
    change = np.where(scored, np.abs(c - p), 0.0)
    if band is None:
        allowed = np.maximum(abs_tolerance, rel_tolerance * np.maximum(np.abs(p), np.abs(c)))
        allowed = np.where(np.isfinite(allowed), allowed, 0.0)
    else:
        allowed = band
    score_real = scored & (change > allowed)
    if band is not None:
        # A label flip whose score moved, but no more than replay noise, is noise near the threshold: replayed
        # production flips other records near it just as often. (A flip with an unchanged score is real.)
        label_real = label_real & ~(scored & (change > 0) & (change <= band))
    del change
    other_real = ~labelled & ~scored & ~same_hash & ~tolerant
    return (label_real | score_real | other_real) & ~same_hash


def one_sided_fields(production_raw: pd.Series, candidate_raw: pd.Series) -> tuple[Counter, Counter, np.ndarray]:
    """Field paths present in one side's answer only: (only production, only candidate, per-record flag).

    JSON answers give dotted paths (`a.b`, list items as `a[]`); CSV answers give `column[i]`.
    """
    only_p, only_c = Counter(), Counter()
    flags = np.zeros(len(production_raw), dtype=bool)
    for i, (p_raw, c_raw) in enumerate(zip(production_raw, candidate_raw)):
        p_fields, c_fields = output_fields(p_raw), output_fields(c_raw)
        missing, extra = p_fields - c_fields, c_fields - p_fields
        only_p.update(missing)
        only_c.update(extra)
        flags[i] = bool(missing or extra)
    return only_p, only_c, flags


def output_fields(raw: Any) -> frozenset[str]:
    """The field paths of one answer (JSON: dotted key paths; CSV or a bare value: column[i])."""
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return frozenset()
    text = str(raw)
    try:
        value = json.loads(text)
    except ValueError:
        try:
            row = next(csv.reader([text]))
        except (csv.Error, StopIteration):
            return frozenset({"column[0]"})
        return frozenset(f"column[{i}]" for i in range(len(row)))
    if isinstance(value, list) and not any(isinstance(v, (dict, list)) for v in value):
        return frozenset(f"column[{i}]" for i in range(len(value)))
    paths: set[str] = set()
    _paths(value, "", paths)
    return frozenset(paths)


def _paths(value: Any, prefix: str, out: set[str]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _paths(inner, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, list):
        for inner in value:
            _paths(inner, f"{prefix}[]", out)
        if not value:
            out.add(f"{prefix}[]")
    else:
        out.add(prefix or "value")


def top_changes(frame: pd.DataFrame, real: np.ndarray, limit: int) -> tuple[ChangedRecord, ...]:
    """The records that changed most: real differences first, then label flips, then by |score delta|."""
    if len(frame) == 0 or limit <= 0:
        return ()
    p, c = _numeric(frame, "production_score"), _numeric(frame, "candidate_score")
    flipped = (text_values(frame, "production_label") != text_values(frame, "candidate_label")).to_numpy(bool) & \
        text_values(frame, "production_label").notna().to_numpy(bool) & text_values(frame, "candidate_label").notna().to_numpy(bool)
    differs = (text_values(frame, "production_hash") != text_values(frame, "candidate_hash")).to_numpy(bool)
    record_ids = text_values(frame, "record_id").fillna("").to_numpy(str)
    # record id breaks ties so row order never matters
    order = top_change_order(p, c, flipped, differs, real, limit, tie=np.argsort(record_ids, kind="stable"))
    noise = _numeric(frame, "noise_abs_diff")
    rows = frame.iloc[order] if len(order) else frame.iloc[0:0]
    return tuple(changed_record(str(record_ids[i]), row.get("input_text"), row.get("production_raw"),
                                row.get("candidate_raw"), p[i], c[i], _str(row.get("production_label")),
                                _str(row.get("candidate_label")), noise[i], bool(real[i]))
                 for i, (_, row) in zip(order, rows.iterrows()))


def top_change_order(production_score: np.ndarray, candidate_score: np.ndarray, flipped: np.ndarray,
                     differs: np.ndarray, real: np.ndarray, limit: int, tie: np.ndarray | None = None) -> np.ndarray:
    """Positions of the top changes: real first, then flips, then by |score delta|, then `tie` order.

    `tie` lists the positions in tie-break order (record id order); None: position order itself.
    """
    delta = candidate_score - production_score
    magnitude = np.where(np.isfinite(delta), np.abs(delta), 0.0)
    del delta
    candidates = np.flatnonzero(differs | flipped | (magnitude > 0))
    if tie is not None:
        rank = np.empty(len(tie), dtype=np.int64)
        rank[tie] = np.arange(len(tie))
        candidates = candidates[np.argsort(rank[candidates], kind="stable")]
    # lexsort: the last key sorts first, and it is stable, so ties keep the tie-break order
    chosen = np.lexsort((-magnitude[candidates], ~flipped[candidates], ~real[candidates]))[:max(limit, 0)]
    return candidates[chosen]


def changed_record(record_id: str, input_text: Any, production_raw: Any, candidate_raw: Any,
                   production_score: float, candidate_score: float, production_label: str | None,
                   candidate_label: str | None, noise_abs_diff: float, real: bool) -> ChangedRecord:
    return ChangedRecord(
        record_id=record_id, input_text=_clip(input_text), production_raw=_clip(production_raw),
        candidate_raw=_clip(candidate_raw), production_score=_float(production_score),
        candidate_score=_float(candidate_score), production_label=production_label,
        candidate_label=candidate_label, score_delta=_float(candidate_score - production_score),
        noise_abs_diff=_float(noise_abs_diff), beyond_noise=real)


def record_diff(frame: pd.DataFrame, thresholds: tuple[float, ...], top: int, noise_quantile: float,
                abs_tolerance: float, rel_tolerance: float) -> RecordDiff:
    """The typed diff of a run's joined records (shadow_records columns)."""
    n = len(frame)
    band = noise_band(frame, noise_quantile, abs_tolerance)
    real = beyond_noise(frame, band, abs_tolerance, rel_tolerance)
    only_p, only_c, one_sided = one_sided_fields(text_values(frame, "production_raw"), text_values(frame, "candidate_raw"))
    p, c = _numeric(frame, "production_score"), _numeric(frame, "candidate_score")
    score_one_sided = np.isfinite(p) != np.isfinite(c)
    label_one_sided = (text_values(frame, "production_label").notna() != text_values(frame, "candidate_label").notna()).to_numpy()
    exact = int((text_values(frame, "production_hash") == text_values(frame, "candidate_hash")).sum()) if n else 0
    tolerant = int(frame["tolerant_match"].astype("boolean").fillna(False).sum()) if "tolerant_match" in frame else 0
    return RecordDiff(
        records=n, exact=exact, tolerant=tolerant, crossings=threshold_crossings(p, c, thresholds),
        top_changes=top_changes(frame, real, top),
        fields_only_production=dict(sorted(only_p.items(), key=lambda kv: (-kv[1], kv[0]))),
        fields_only_candidate=dict(sorted(only_c.items(), key=lambda kv: (-kv[1], kv[0]))),
        records_one_sided=int(np.sum(one_sided | score_one_sided | label_one_sided)),
        noise_band=band, beyond_noise=int(real.sum()),
        noise_records=int(text_values(frame, "production_replay_raw").notna().sum()))


def _numeric(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name not in frame:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(float, na_value=np.nan)


def text_values(frame: pd.DataFrame, name: str) -> pd.Series:
    """A column as strings with None for every kind of missing value (absent column: all None)."""
    if name not in frame:
        return pd.Series([None] * len(frame), index=frame.index, dtype=object)
    return pd.Series([None if is_missing(v) else str(v) for v in frame[name]], index=frame.index, dtype=object)


def is_missing(value: Any) -> bool:
    """None, pandas NA/NaT or a float NaN."""
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value))


def _clip(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value)
    return text if len(text) <= _TEXT_LIMIT else text[:_TEXT_LIMIT - 1] + "…"


def _str(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def _float(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
