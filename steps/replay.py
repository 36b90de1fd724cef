"""Replay one replay-plan group through a model: the local stand-in for one Batch Transform job.

The group's knobs (docs/internals.md, "Replay plan") plus replay.* from the config make the
TransformJob. A model given as an http(s) URL is any container already speaking the contract (for
example the user's real serving image); anything else is a model.tar.gz or folder served locally
for the duration of the job, with the batch environment SageMaker would give it.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from analysis.outputs import DEFAULT_RECORDS_PATH
from analysis.quarantine import REASONS
from steps.config import ReplayConfig
from steps.invocations import Measurements
from steps.model_server import serve_model
from steps.transformer import TransformJob, TransformJobError, TransformResult, checkpoint_path, transform

log = logging.getLogger("shadow_eval.replay")

WRONG_ANSWER_REASONS = {"replay_output_mismatch", "unparsable_candidate_output"}
"""Reasons join gives records whose .out exists but does not answer them right."""
PLAN_GROUP_KEYS = {"content_type", "accept", "split_type", "batch_strategy", "assemble_with", "data_processing",
                   "files", "records"}


def transform_job(plan_group: dict[str, Any], replay: ReplayConfig, records_path: str | None = None) -> TransformJob:
    """The CreateTransformJob knobs for a plan group: the group's record handling, the config's limits.

    records_path is the side's output.records_path (None: `predictions`), used to take a one-document
    answer to a batch apart record by record.
    """
    unknown = sorted(set(plan_group) - PLAN_GROUP_KEYS)
    if unknown:
        raise TransformJobError(f"replay plan group has an unknown key {unknown[0]!r} "
                                f"(known: {', '.join(sorted(PLAN_GROUP_KEYS))})")
    return TransformJob(
        content_type=plan_group.get("content_type"),
        accept=plan_group.get("accept"),
        split_type=plan_group.get("split_type") or "None",
        batch_strategy=plan_group.get("batch_strategy") or replay.batch_strategy,
        max_payload_mb=replay.max_payload_mb,
        max_concurrent_transforms=replay.max_concurrent_transforms,
        assemble_with=plan_group.get("assemble_with") or "None",
        data_processing=plan_group.get("data_processing") or None,
        invocation_timeout_s=replay.invocation_timeout_s,
        invocation_max_retries=replay.invocation_max_retries,
        records_path=records_path or DEFAULT_RECORDS_PATH,
    )


def is_url(model: str) -> bool:
    return model.startswith(("http://", "https://"))


def run(plan_group: dict[str, Any], input_dir: str | Path, output_dir: str | Path, model: str,
        replay: ReplayConfig, log_path: str | Path, side: str, measure: Measurements | None = None, *,
        producer: str = "", records_path: str | None = None) -> TransformResult:
    """Transform every replay input file of a group through `model`; the caller writes replay/<side>.json.

    `producer` (the model's digest) goes into every checkpoint: an answer by another model is never reused.
    measure, when given, records each invocation and the model server's start time and peak memory.
    """
    job = transform_job(plan_group, replay, records_path)
    on_invocation = measure.record if measure else None
    if is_url(model):
        log.info("replaying %s through the container at %s", side, model)
        result = transform(input_dir, output_dir, model, job, producer=producer, on_invocation=on_invocation)
    else:
        starting = time.monotonic()
        with serve_model(model, Path(log_path), env=job.container_environment()) as url:
            if measure:
                measure.server_started(url, time.monotonic() - starting)
            result = transform(input_dir, output_dir, url, job, producer=producer, on_invocation=on_invocation)
            if measure:
                measure.server_finishing()
    return dataclasses.replace(result, side=side)


def forget_wrong_answers(run_dir: str | Path) -> list[str]:
    """Drop the checkpoints of replay files whose answers join found wrong (count, NaN, unparsable).

    Such a file has a complete .out, so a resumed run would skip it and keep the wrong answers; without
    its checkpoint the file is transformed again. Returns the replay files forgotten.
    """
    run_dir = Path(run_dir)
    places = set()
    for part in sorted((run_dir / "join" / "quarantine").glob("*.parquet")):
        for row in pq.read_table(part, columns=["record_id", "capture_file", "capture_line", "reason"]).to_pylist():
            if _wrong_answer(row["reason"]):
                places.add((row["record_id"], row["capture_file"], row["capture_line"]))
    files = set()
    if places:
        columns = ["record_id", "capture_file", "capture_line", "replay_file"]
        for part in sorted((run_dir / "prepare" / "records").glob("*.parquet")):
            for row in pq.read_table(part, columns=columns).to_pylist():
                if row["replay_file"] and (row["record_id"], row["capture_file"], row["capture_line"]) in places:
                    files.add(row["replay_file"])
    for replay_file in sorted(files):  # join judges the candidate's answers only
        checkpoint_path(run_dir / "replay" / "candidate" / f"{replay_file}.out").unlink(missing_ok=True)
    if files:
        log.info("%d replay files had wrong answers; a resumed run transforms them again", len(files))
    return sorted(files)


def _wrong_answer(code: str) -> bool:
    """A quarantine reason that means a .out exists but its answers are wrong (the model's fault)."""
    reason = REASONS.get(code)
    if reason is None:
        return False
    if getattr(reason, "owner", None) == "candidate":
        return code != "replay_file_failed"  # no .out, so no checkpoint to forget
    return code in WRONG_ANSWER_REASONS
