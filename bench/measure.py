"""One measurement in a fresh process: `python -m bench.measure TASK ARGS...`, prints one JSON line."""
from __future__ import annotations

import json
import resource
import shutil
import sys
import time
from pathlib import Path


def stats(root: str) -> dict:
    from steps import capture_stats

    result = capture_stats.collect(Path(root))
    return {"records": result["records"], "calls": result["calls"], "quarantined": result["quarantined"]}


def duckdb_read_json(root: str) -> dict:
    import duckdb

    # The raw parse only: one row per line, no splitting of bodies into records.
    query = (f"select count(*), count(distinct captureData.endpointInput.encoding) "
             f"from read_json('{root}/**/*.jsonl', format='newline_delimited')")
    (calls, encodings), = duckdb.sql(query).fetchall()
    return {"calls": calls, "notes": "lines parsed, bodies not split"}


def prepare(root: str, run_dir: str) -> dict:
    from steps import prepare as stage
    from steps.config import config_from_mapping

    shutil.rmtree(run_dir, ignore_errors=True)
    result = stage.run(config_from_mapping({"capture": {"root": root}}), Path(run_dir))
    return {"records": result.records, "prepared": result.prepared, "quarantined": result.quarantined}


def replay(root: str, run_dir: str, batch_strategy: str) -> dict:
    """Prepare a CSV capture, then replay it through the demo's production model."""
    from steps import demo, replay as stage
    from steps.config import ReplayConfig, config_from_mapping
    from steps import prepare as prepare_stage

    shutil.rmtree(run_dir, ignore_errors=True)
    run = Path(run_dir)
    prepare_stage.run(config_from_mapping({"capture": {"root": root}}), run)
    plan = json.loads((run / "prepare" / "replay-plan.json").read_text())["groups"]["csv"]
    production, _, _, _ = demo.train_models(seed=7)
    model = demo.package_model(production, run / "model.tar.gz")
    knobs = ReplayConfig(batch_strategy=batch_strategy, max_concurrent_transforms=2, invocation_timeout_s=600)
    plan = {**plan, "batch_strategy": batch_strategy}
    started = time.perf_counter()
    result = stage.run(plan, run / "prepare" / "replay-input" / "csv", run / "replay", str(model), knobs,
                       run / "model-server.log", "candidate")
    return {"records": plan["records"], "invocations": result.invocations, "files_failed": len(result.files_failed),
            "seconds_including_server_start": round(time.perf_counter() - started, 2),
            "transform_seconds": round(result.seconds, 2),
            "notes": f"{result.invocations} invocations"}


TASKS = {"stats": stats, "duckdb": duckdb_read_json, "prepare": prepare, "replay": replay}


def main(argv: list[str]) -> None:
    task, *args = argv
    started = time.perf_counter()
    result = TASKS[task](*args)
    seconds = time.perf_counter() - started
    if task == "replay":
        seconds = result["transform_seconds"]  # the model server's start-up is not replay throughput
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({**result, "seconds": round(seconds, 3), "peak_rss_mb": round(peak_mb, 1)}))


if __name__ == "__main__":
    main(sys.argv[1:])
