"""Benchmark: automatic segments over a wide input, the way compare feeds them (part by part).

    python -m bench.segments [--records 100000] [--columns 300] [--part 20000]

Builds joined records with `columns` numeric CSV input columns and a two-key CustomAttributes header,
feeds them to analysis.segments.SegmentEvidenceBuilder in parts of `part` records, and prints the
seconds spent adding and judging (generation not counted), the segments found and the peak RSS.
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import pandas as pd

from analysis.segments import SegmentEvidenceBuilder, judge_segments
from steps.config import CompareConfig


def joined_records(records: int, columns: int, seed: int = 3) -> pd.DataFrame:
    """shadow_records-shaped rows: CSV inputs, a header, labels for both models and ground truth."""
    rng = np.random.default_rng(seed)
    inputs = []
    for start in range(0, records, 10_000):  # text a block at a time: the records' texts, not 30M cells, in memory
        values = pd.DataFrame(rng.normal(size=(min(10_000, records - start), columns)).round(3)).astype(str)
        inputs += (values[0].str.cat(values.iloc[:, 1:], sep=",") if columns > 1 else values[0]).tolist()
        del values
    truth = rng.integers(0, 2, records)
    kind = rng.choice(4, records, p=[0.8, 0.1, 0.05, 0.05])  # both right, both wrong, production only, candidate only
    p_label = np.where((kind == 0) | (kind == 2), truth, 1 - truth)  # equally good models: nothing should be flagged
    c_label = np.where((kind == 0) | (kind == 3), truth, 1 - truth)
    channel = rng.choice(["web", "mobile", "store", "partner"], records)
    return pd.DataFrame({"input_text": pd.Series(inputs, dtype=object),
                         "custom_attributes": [f"channel={c};tenant=t{k % 7}" for k, c in enumerate(channel)],
                         "production_label": p_label.astype(str), "candidate_label": c_label.astype(str),
                         "ground_truth_label": truth.astype(str),
                         "production_hash": p_label.astype(str), "candidate_hash": c_label.astype(str)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.segments", description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--columns", type=int, default=300)
    parser.add_argument("--part", type=int, default=20_000, help="records per part (compare reads one file each)")
    args = parser.parse_args(argv)
    frame = joined_records(args.records, args.columns)
    before = _peak_mb()
    builder = SegmentEvidenceBuilder(CompareConfig())
    cpu = time.process_time()
    started = time.perf_counter()
    for start in range(0, len(frame), args.part):
        builder.add(frame.iloc[start:start + args.part])
    added = time.perf_counter()
    scan = builder.finish("classification")
    judgement = judge_segments(scan)
    finished = time.perf_counter()
    cpu = time.process_time() - cpu
    print(f"{args.records} records x {args.columns} columns: {scan.features} features, {scan.segments} segments, "
          f"{scan.tested} tested, {scan.flagged} flagged ({judgement.passed=})")
    print(f"add {added - started:.2f} s + finish {finished - added:.2f} s = {finished - started:.2f} s wall, "
          f"{cpu:.2f} s CPU; peak RSS {before:.0f} MB with the records built, {_peak_mb():.0f} MB after")
    return 0


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    raise SystemExit(main())
