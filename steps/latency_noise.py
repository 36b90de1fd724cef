"""The latency noise reference: a sample of production's batches replayed a second time.

Production's captured latency is not known (capture records no timings), so the reference for
"how much do two measurements of the same model on the same batches differ" is production
measured twice here: whole replay files, chosen at random (seeded) until at least
replay.noise_repeat_batches batches per group, sent again through the same path in a fresh model
server (as each side gets its own), under side `production_repeat`. The answers are discarded;
only the timings and errors are kept. What it cannot show: drift between the times the sides ran.
"""
from __future__ import annotations

import logging
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from steps import replay
from steps.config import Config
from steps.invocations import FOLDER, Measurements

log = logging.getLogger("shadow_eval.latency_noise")

SIDE = "production_repeat"


def replay_again(config: Config, run_dir: Path, plan: dict[str, Any], model: str) -> int:
    """Send a sample of production's batches again and record them; returns the batches sent."""
    limit = config.replay.noise_repeat_batches
    sent = 0
    if not limit:
        return sent
    for group, knobs in plan["groups"].items():
        files = sample_files(run_dir / FOLDER / "production" / f"{group}.parquet", limit, config.compare.seed)
        if not files:
            continue
        source = run_dir / "prepare" / "replay-input" / group
        with tempfile.TemporaryDirectory(dir=run_dir / "replay", prefix=".repeat-") as scratch:
            inputs, outputs = Path(scratch) / "input", Path(scratch) / "output"
            for relative in files:
                target = inputs / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(source / relative, target)
            measure = Measurements(SIDE, group)
            log.info("replaying %d production files of %s again (latency noise reference)", len(files), group)
            result = replay.run(knobs, inputs, outputs, model, config.replay,
                                run_dir / "logs" / f"model-server-{SIDE}-{group}.log", SIDE, measure)
            measure.write(run_dir, result)
            sent += result.invocations
    return sent


def sample_files(production_invocations: Path, limit: int, seed: int) -> list[str]:
    """Replay files in a seeded random order, taken until they hold at least `limit` answered batches."""
    if not production_invocations.exists():
        return []
    frame = pq.read_table(production_invocations, columns=["replay_file", "outcome"]).to_pandas()
    batches = frame[frame["outcome"] == "ok"].groupby("replay_file").size()
    files = sorted(batches.index)
    random.Random(seed).shuffle(files)
    chosen, total = [], 0
    for name in files:
        if total >= limit:
            break
        chosen.append(name)
        total += int(batches[name])
    return sorted(chosen)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
