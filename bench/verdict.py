"""How often the default policy gets the verdict right, over many traffic samples with known truth.

    python -m bench.verdict [--samples 30] [--records 1500] [--seed 1000] [--json results.json]
    (or: make bench-verdict ARGS="...")

Worlds from bench/verdict_worlds.py with configs/local.yaml's gate untouched:
  identical  the candidate is production's artifact      -> false-reject rate, without and with labels
  better3    3 accuracy points better (6% disagreement)   -> approval rate with labels
  worse      3 accuracy points worse                     -> false-accept rate with labels
Targets (issue 10): false reject <= 5% (alpha 0.05), approval >= 95%, false accept <= 5%; each rate
is printed with its count and a 95% Wilson interval.

What runs, and what does not. Per world, ONE traffic population of samples x records records is
built and sent through the real path once (capture written from production's answers, its serving
hooks called in-process rather than over HTTP, which tests/test_verdict_worlds.py shows give the same ->
prepare -> replay of both models through the model server -> join with Model Monitor ground truth;
`pipeline.run_local`, which also gives the pooled verdict). The joined records are then split by
call into `samples` disjoint samples of about `records` records each - independent draws of fresh
traffic, since calls are drawn independently - and each sample goes through the compare stage
(steps.compare.run: paired statistics, bootstrap intervals, slices) and the gate stage
(steps.gate.run: the default policy, evaluation.json; no registry). "Without labels" is the same
sample with its ground-truth column emptied. So capture, prepare, replay and join are exercised
once per world, not per sample; compare and gate run per sample. Seeds are printed and fixed:
the same arguments give the same samples and verdicts.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import pipeline
from analysis.results import Accounting
from steps import compare, gate, join
from steps.config import load_config
from bench import verdict_worlds as worlds

TARGETS = (
    # world, labels, the outcome counted, what the rate is called, bound kind, target
    ("identical", False, "Rejected", "false-reject rate, identical, no labels", "at_most", 0.05),
    ("identical", True, "Rejected", "false-reject rate, identical, labels", "at_most", 0.05),
    ("better3", True, "Approved", "approval rate, 3 points better, labels", "at_least", 0.95),
    ("worse", True, "Approved", "false-accept rate, 3 points worse, labels", "at_most", 0.05),
)


@dataclasses.dataclass
class Sample:
    world: str
    labels: bool
    index: int
    records: int
    labelled: int
    decision: str
    reasons: list[str]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.verdict", description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=30, help="traffic samples per world (default 30)")
    parser.add_argument("--records", type=int, default=1500, help="records per sample (default 1500)")
    parser.add_argument("--seed", type=int, default=1000, help="world w's traffic seed is seed + w (default 1000)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--out", type=Path, help="keep the worlds and runs here (default: a temporary folder)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    out = args.out or Path(tempfile.mkdtemp(prefix="bench-verdict-"))
    started = time.perf_counter()
    samples, pooled, seeds, timings, sizes = [], {}, {}, {}, {}
    for number, name in enumerate(dict.fromkeys(target[0] for target in TARGETS)):
        seed = args.seed + number
        seeds[name] = seed
        print(f"world {name}: seed {seed}, {args.samples} samples x {args.records} records", file=sys.stderr)
        began = time.perf_counter()
        world = worlds.build(out / name, worlds.WORLDS[name], seed=seed, records=args.samples * args.records,
                             serve=False)
        outcome = pipeline.run_local(load_config(world.config(labels=True)), run_id="pooled")
        pooled[name], sizes[name] = outcome.decision, len(world.records)
        timings[f"{name}: build + real path, {len(world.records)} records"] = round(time.perf_counter() - began, 1)
        began = time.perf_counter()
        labelled_variants = sorted({labels for world_name, labels, *_ in TARGETS if world_name == name})
        samples += judge_samples(world, outcome.run_dir, args.samples, seed, labelled_variants)
        timings[f"{name}: compare + gate of {args.samples} x {len(labelled_variants)} samples"] = \
            round(time.perf_counter() - began, 1)
    rates = [rate(samples, *target) for target in TARGETS]
    results = {"samples": args.samples, "records_per_sample": args.records, "seeds": seeds,
               "world_records": sizes, "pooled_decisions": pooled, "rates": rates, "timings_s": timings,
               "seconds": round(time.perf_counter() - started, 1),
               "machine": {"python": platform.python_version(), "platform": platform.platform()},
               "per_sample": [dataclasses.asdict(s) for s in samples]}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    print(table(results))
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)
    return 0


def judge_samples(world: worlds.World, run_dir: Path, count: int, seed: int, variants: list[bool]) -> list[Sample]:
    """Split the world's joined records by call into `count` disjoint samples; compare and gate each."""
    records = pa.concat_tables(pq.read_table(part) for part in join.parquet_parts(run_dir / "join" / "records"))
    quarantined = json.loads((run_dir / "report" / "report.json").read_text())["accounting"]["quarantined"]
    if quarantined:
        raise RuntimeError(f"{world.spec.name}: {quarantined} records quarantined; the samples would not account")
    calls = sorted(set(zip(records["capture_file"].to_pylist(), records["capture_line"].to_pylist())))
    random.Random(seed).shuffle(calls)
    sample_of = {call: number * count // len(calls) for number, call in enumerate(calls)}
    which = pa.array([sample_of[call] for call in zip(records["capture_file"].to_pylist(),
                                                      records["capture_line"].to_pylist())])
    config = {labels: load_config(world.config(labels)) for labels in variants}
    judged = []
    for index in range(count):
        sample = records.filter(pc.equal(which, index))
        labelled = len(sample) - sample["ground_truth_label"].null_count
        for labels in variants:
            table = sample if labels else sample.set_column(
                sample.schema.get_field_index("ground_truth_label"), "ground_truth_label",
                pa.nulls(len(sample), sample.schema.field("ground_truth_label").type))
            sample_dir = run_dir.parent / f"sample-{index:03d}-{'labels' if labels else 'no-labels'}"
            (sample_dir / "join" / "records").mkdir(parents=True, exist_ok=True)
            pq.write_table(table, sample_dir / "join" / "records" / "0.parquet")
            comparison = compare.run(config[labels], sample_dir)
            decision = gate.run(config[labels], sample_dir, comparison, accounting(len(sample)), None, None, None,
                                sample_dir.name)
            judged.append(Sample(world.spec.name, labels, index, len(sample), labelled if labels else 0,
                                 decision.status, list(decision.reasons)))
    return judged


def accounting(records: int) -> Accounting:
    """A sample's accounting: every record joined (the world quarantines none)."""
    extra = {"by_owner": {}} if "by_owner" in {f.name for f in dataclasses.fields(Accounting)} else {}
    return Accounting(captured=records, joined=records, quarantined=0, by_reason={}, **extra)


def rate(samples: list[Sample], world: str, labels: bool, outcome: str, name: str, bound: str,
         target: float) -> dict:
    """The share of a world's samples that ended in `outcome`, with its Wilson interval and the target."""
    chosen = [s for s in samples if s.world == world and s.labels == labels]
    hits = sum(s.decision == outcome for s in chosen)
    low, high = wilson(hits, len(chosen))
    value = hits / len(chosen) if chosen else math.nan
    met = value <= target if bound == "at_most" else value >= target
    decisions = {d: sum(s.decision == d for s in chosen) for d in ("Approved", "Rejected", "Inconclusive")}
    return {"rate": name, "world": world, "labels": labels, "outcome": outcome, "count": hits, "samples": len(chosen),
            "value": value, "wilson_95": [low, high], "target": f"{'<=' if bound == 'at_most' else '>='} {target}",
            "met": met, "decisions": decisions}


def wilson(hits: int, n: int, z: float = statistics.NormalDist().inv_cdf(0.975)) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion."""
    if n == 0:
        return math.nan, math.nan
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def table(results: dict) -> str:
    lines = [f"verdict bench: {results['samples']} samples x {results['records_per_sample']} records per world, "
             f"seeds {results['seeds']}, {results['seconds']} s",
             f"pooled verdicts (all samples of a world in one run): {results['pooled_decisions']}", "",
             "| rate | count / samples | value | 95% Wilson | target | met | decisions (A/R/I) |",
             "|---|---|---|---|---|---|---|"]
    for r in results["rates"]:
        d = r["decisions"]
        lines.append(f"| {r['rate']} | {r['count']} / {r['samples']} | {r['value']:.3f} | "
                     f"[{r['wilson_95'][0]:.3f}, {r['wilson_95'][1]:.3f}] | {r['target']} | "
                     f"{'yes' if r['met'] else 'NO'} | {d['Approved']}/{d['Rejected']}/{d['Inconclusive']} |")
    lines += ["", "timings (s): " + "; ".join(f"{k} {v}" for k, v in results["timings_s"].items())]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
