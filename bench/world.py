"""Synthetic capture at scale, written by the same CaptureWriter the demo uses."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
from pathlib import Path

from steps.capture_writer import CaptureWriter, DataCaptureSettings

ENDPOINT = "bench-endpoint"
FEATURES = 30  # the breast-cancer data set's width, so the demo's models can answer
START = dt.datetime(2026, 1, 5, 0, 0, tzinfo=dt.timezone.utc)
CALLS_PER_SECOND = 20


@dataclasses.dataclass(frozen=True)
class GeneratedCapture:
    root: Path
    records: int
    calls: int
    files: int
    megabytes: float

    def to_json(self) -> dict:
        return dataclasses.asdict(self) | {"root": str(self.root)}


def generate_capture(root: Path, records: int, *, csv_only: bool = False, seed: int = 11) -> GeneratedCapture:
    """At least `records` records in 1-5-row calls; reused when a previous run left the same tree."""
    stamp = root / "generated.json"
    if stamp.exists():
        return GeneratedCapture(**{**json.loads(stamp.read_text()), "root": root})
    rng = random.Random(seed)
    settings = DataCaptureSettings(destination=root, endpoint=ENDPOINT,
                                   json_content_types=("application/json", "application/jsonlines"))
    written = calls = 0
    with CaptureWriter(settings, rng) as writer:
        while written < records:
            rows = [[round(rng.uniform(0, 30), 4) for _ in range(FEATURES)] for _ in range(rng.randint(1, 5))]
            moment = START + dt.timedelta(seconds=calls / CALLS_PER_SECOND)
            if csv_only or rng.random() < 0.7:
                request = "\n".join(",".join(map(str, row)) for row in rows).encode()
                response = "".join(f"{rng.random():.6f},{rng.randint(0, 1)}\n" for _ in rows).encode()
                writer.capture(request, "text/csv", response, "text/csv; charset=utf-8", moment)
            else:
                request = json.dumps({"instances": [{"features": row} for row in rows]}).encode()
                answers = [{"score": round(rng.random(), 6), "predicted_label": rng.randint(0, 1)} for _ in rows]
                writer.capture(request, "application/json", json.dumps({"predictions": answers}).encode(),
                               "application/json", moment, inference_id=f"req-{calls}")
            written += len(rows)
            calls += 1
    files = sorted(root.rglob("*.jsonl"))
    generated = GeneratedCapture(root, written, calls, len(files),
                                 round(sum(f.stat().st_size for f in files) / 2**20, 1))
    stamp.write_text(json.dumps(generated.to_json()))
    return generated
