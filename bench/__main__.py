"""Benchmarks: capture reading and replay throughput, with peak memory.

    python -m bench [--records N] [--replay-records M] [--out DIR]      (or: make bench ARGS="...")

Generates N captured records in SageMaker's layout (CSV and JSON callers, 1-5 rows per call),
then measures, each in its own process so peak RSS is its own:
  * capture-stats over the folder, next to DuckDB's raw `read_json` of the same files;
  * the prepare stage (parse, split, write replay input and Parquet);
  * replay of M CSV records through a local model server, MultiRecord next to SingleRecord.
Prints a Markdown table and writes results.json to DIR. Numbers depend on the machine; the
command is what is reproducible.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from bench import world


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=200_000, help="captured records to read (default 200000)")
    parser.add_argument("--replay-records", type=int, default=20_000, help="records to replay (default 20000)")
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    capture = world.generate_capture(args.out / f"capture-{args.records}", args.records)
    replay_capture = world.generate_capture(args.out / f"capture-{args.replay_records}-csv", args.replay_records,
                                            csv_only=True)
    results = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "capture": capture.to_json(),
        "stats": _measure("stats", capture.root),
        "duckdb_read_json": _measure("duckdb", capture.root),
        "prepare": _measure("prepare", capture.root, args.out / "prepare-run"),
        "replay_multi_record": _measure("replay", replay_capture.root, args.out / "replay-multi", "MultiRecord"),
        "replay_single_record": _measure("replay", replay_capture.root, args.out / "replay-single", "SingleRecord"),
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(_table(results))
    return 0


def _measure(*task: object) -> dict:
    """Run one measurement in a fresh interpreter and return what it printed (JSON)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bench.measure", *map(str, task)], check=True,
                          capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_seconds"] = round(time.perf_counter() - started, 2)
    return result


def _table(results: dict) -> str:
    capture = results["capture"]
    rows = [
        ("capture-stats", results["stats"], capture["records"]),
        ("duckdb read_json (raw lines)", results["duckdb_read_json"], capture["records"]),
        ("prepare", results["prepare"], capture["records"]),
        ("replay MultiRecord", results["replay_multi_record"], results["replay_multi_record"]["records"]),
        ("replay SingleRecord", results["replay_single_record"], results["replay_single_record"]["records"]),
    ]
    lines = [f"capture: {capture['records']} records in {capture['calls']} calls, {capture['files']} files, "
             f"{capture['megabytes']} MB",
             "", "| task | records | seconds | records/s | peak RSS MB | notes |", "|---|---|---|---|---|---|"]
    for name, result, records in rows:
        rate = records / result["seconds"] if result["seconds"] else float("inf")
        lines.append(f"| {name} | {records} | {result['seconds']:.2f} | {rate:,.0f} | {result['peak_rss_mb']:.0f} "
                     f"| {result.get('notes', '')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
