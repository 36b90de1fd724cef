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

from steps.config import ReplayConfig
from steps.invocations import Measurements
from steps.model_server import serve_model
from steps.transformer import TransformJob, TransformJobError, TransformResult, transform

log = logging.getLogger("shadow_eval.replay")

PLAN_GROUP_KEYS = {"content_type", "accept", "split_type", "batch_strategy", "assemble_with", "data_processing",
                   "files", "records"}


def transform_job(plan_group: dict[str, Any], replay: ReplayConfig) -> TransformJob:
    """The CreateTransformJob knobs for a plan group: the group's record handling, the config's limits."""
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
    )


def is_url(model: str) -> bool:
    return model.startswith(("http://", "https://"))


def run(plan_group: dict[str, Any], input_dir: str | Path, output_dir: str | Path, model: str,
        replay: ReplayConfig, log_path: str | Path, side: str, measure: Measurements | None = None) -> TransformResult:
    """Transform every replay input file of a group through `model`; the caller writes replay/<side>.json.

    measure, when given, records each invocation and the model server's start time and peak memory.
    """
    job = transform_job(plan_group, replay)
    on_invocation = measure.record if measure else None
    if is_url(model):
        log.info("replaying %s through the container at %s", side, model)
        result = transform(input_dir, output_dir, model, job, on_invocation=on_invocation)
    else:
        starting = time.monotonic()
        with serve_model(model, Path(log_path), env=job.container_environment()) as url:
            if measure:
                measure.server_started(url, time.monotonic() - starting)
            result = transform(input_dir, output_dir, url, job, on_invocation=on_invocation)
            if measure:
                measure.server_finishing()
    return dataclasses.replace(result, side=side)
