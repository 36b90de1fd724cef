"""Soak: a multi-million-record window through the whole embedded default, with peak memory per size.

    python -m bench.soak --records 1000000 2000000 [--out bench/out/soak] [--all-formats]
    python -m bench.soak --records 1000000 2000000 --out bench/out/soak --stages compare publish

`--stages` re-measures only the named stages (compare, gate, report, publish) on the run folders a
previous soak left under --out (workspace-<records>-<suffix>/runs/soak), each size in a fresh
interpreter, and writes soak-stages.json; stages not named but needed by a later one run unmeasured.

For each size: generate a capture window in SageMaker's layout (bench/world.py; CSV callers by
default, `--all-formats` adds JSON-document callers, replayed one request per call), then run
`pipeline.run_local` in a fresh interpreter (prepare, replay through the demo's candidate model on a
local model server, join, compare, gate, report, tables). The child reports its own peak RSS
(getrusage RUSAGE_SELF) and the model server's (RUSAGE_CHILDREN). Memory that stays flat between
sizes is the point: every stage streams one capture file (or one Parquet part) at a time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench import world


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, nargs="+", default=[1_000_000, 2_000_000])
    parser.add_argument("--out", type=Path, default=Path("bench/out/soak"))
    parser.add_argument("--all-formats", action="store_true", help="JSON-document callers too (slower replay)")
    parser.add_argument("--stages", nargs="+", choices=RERUN_STAGES,
                        help="re-measure only these stages on the run folders a previous soak left under --out")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.stages:
        return _main_stages(args)
    results = []
    for records in args.records:
        suffix = "mixed" if args.all_formats else "csv"
        started = time.perf_counter()
        capture = world.generate_capture(args.out / f"capture-{records}-{suffix}", records,
                                         csv_only=not args.all_formats)
        generate_seconds = time.perf_counter() - started
        done = subprocess.run([sys.executable, "-m", "bench.soak", "--one", str(capture.root),
                               str(args.out / f"workspace-{records}-{suffix}")],
                              check=True, capture_output=True, text=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result |= {"generated": capture.to_json(), "generate_seconds": round(generate_seconds, 1)}
        results.append(result)
        print(_row(result), flush=True)
    summary = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "platform": platform.platform()}, "sizes": results}
    (args.out / "soak.json").write_text(json.dumps(summary, indent=2))
    print(_table(results))
    return 0


RERUN_STAGES = ("compare", "gate", "report", "publish")


def _main_stages(args) -> int:
    suffix = "mixed" if args.all_formats else "csv"
    results = []
    for records in args.records:
        workspace = args.out / f"workspace-{records}-{suffix}"
        if not (workspace / "runs" / "soak" / "join" / "records").is_dir():
            raise SystemExit(f"no joined run under {workspace}: run the whole soak first")
        done = subprocess.run([sys.executable, "-m", "bench.soak", "--stages-one", str(workspace), *args.stages],
                              check=True, capture_output=True, text=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        results.append(result)
        stages = ", ".join(f"{name} {s['seconds']} s / {s['peak_rss_mb']:.0f} MB (from {s['start_rss_mb']:.0f} MB)"
                           for name, s in result["stages"].items())
        print(f"{result['records']:>10,} records: {stages}", flush=True)
    summary = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "platform": platform.platform()}, "stages": args.stages, "sizes": results}
    (args.out / "soak-stages.json").write_text(json.dumps(summary, indent=2))
    return 0


def run_stages(workspace: str, names: list[str]) -> dict:
    """Re-run compare .. publish on a finished soak run in this process, measuring the named stages."""
    import logging

    import pipeline
    from analysis.gate import decide
    from steps import compare, report
    from steps.backends.catalog import LocalCatalog
    from steps.config import config_from_mapping
    from steps.regate import _accounting

    logging.basicConfig(level=logging.WARNING)
    run_dir = Path(workspace) / "runs" / "soak"
    run_info = json.loads((run_dir / "run.json").read_text())
    config = config_from_mapping(run_info["config"])
    accounting = _accounting(run_dir)
    stages: dict = {}

    def measured(name: str, call):
        if name not in names:
            return call()
        _reset_peak()
        start = _current_mb()
        started = time.perf_counter()
        value = call()
        stages[name] = {"seconds": round(time.perf_counter() - started, 1), "peak_rss_mb": _peak_mb(),
                        "start_rss_mb": start}
        return value

    comparison = measured("compare", lambda: compare.run(config, run_dir))
    decision = measured("gate", lambda: decide(comparison, accounting, config.gate))
    paths = measured("report", lambda: report.run(run_dir, run_info, accounting, comparison, decision))
    if "publish" in names:
        measured("publish", lambda: pipeline.publish_run(
            LocalCatalog(Path(workspace), config.tables.database), run_dir, run_info, accounting, comparison,
            decision, str(paths["report.html"])))
    return {"records": accounting.joined, "stages": stages}


def run_one(capture_root: str, workspace: str) -> dict:
    """One whole run over capture_root in this process; prints one JSON line."""
    import logging

    import pipeline
    from steps import demo
    from steps.config import config_from_mapping

    logging.basicConfig(level=logging.WARNING)
    workspace_path = Path(workspace)
    shutil.rmtree(workspace_path, ignore_errors=True)
    workspace_path.mkdir(parents=True)
    _, candidate, _, _ = demo.train_models(seed=7)
    model = demo.package_model(candidate, workspace_path / "candidate.tar.gz")
    output = {"format": "auto", "records_path": "predictions", "score_path": "score",
              "label_path": "predicted_label", "score_column": 0, "label_column": 1}
    config = config_from_mapping({
        "workspace": str(workspace_path), "capture": {"root": capture_root},
        "production": {"output": output}, "candidate": {"model": str(model), "output": output},
        "replay": {"max_concurrent_transforms": 4, "max_payload_mb": 6},
        # Synthetic traffic: the verdict does not matter here, only that every record is accounted for.
        "gate": {"min_records": 1, "min_coverage": 0.99},
    })
    stages = _instrument_stages(pipeline)
    started = time.perf_counter()
    outcome = pipeline.run_local(config, run_id="soak")
    seconds = time.perf_counter() - started
    accounting = outcome.accounting
    return {"records": accounting.captured, "joined": accounting.joined, "quarantined": accounting.quarantined,
            "balanced": accounting.balanced, "decision": outcome.decision, "seconds": round(seconds, 1),
            "records_per_second": round(accounting.captured / seconds) if seconds else None,
            # Stage peaks are reset between stages (which resets ru_maxrss too): the run's peak is their maximum.
            "peak_rss_mb": max([_peak_mb(), *(stage["peak_rss_mb"] for stage in stages.values())]),
            "model_server_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
            "stages": stages}


def _instrument_stages(pipeline) -> dict:
    """Wrap each stage the runner calls to note its seconds and its own peak RSS (Linux: VmHWM reset per stage)."""
    from steps import compare, gate, join, prepare, replay, report

    stages: dict = {}

    def wrap(owner, name: str, label: str) -> None:
        inner = getattr(owner, name)

        def timed(*args, **kwargs):
            _reset_peak()
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                entry = stages.setdefault(label, {"seconds": 0.0, "peak_rss_mb": 0.0})
                entry["seconds"] = round(entry["seconds"] + time.perf_counter() - started, 1)
                entry["peak_rss_mb"] = max(entry["peak_rss_mb"], _peak_mb())
        setattr(owner, name, timed)

    for module, label in ((prepare, "prepare"), (replay, "replay"), (join, "join"), (compare, "compare"),
                          (gate, "gate"), (report, "report")):
        wrap(module, "run", label)
    wrap(pipeline, "publish_run", "publish")
    return stages


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


def _current_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def _peak_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _row(result: dict) -> str:
    stages = ", ".join(f"{name} {s['seconds']} s / {s['peak_rss_mb']:.0f} MB" for name, s in result["stages"].items())
    return (f"{result['records']:>10,} records: {result['seconds']:>7.1f} s, {result['records_per_second']:,} rec/s, "
            f"peak RSS {result['peak_rss_mb']:.0f} MB (model server {result['model_server_peak_rss_mb']:.0f} MB), "
            f"{result['joined']:,} joined + {result['quarantined']:,} quarantined; per stage: {stages}")


def _table(results: list[dict]) -> str:
    lines = ["| records | capture MB | files | run seconds | records/s | peak RSS MB (runner) | "
             "peak RSS MB (model server) | joined | quarantined |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['records']:,} | {r['generated']['megabytes']} | {r['generated']['files']} | {r['seconds']} "
                     f"| {r['records_per_second']:,} | {r['peak_rss_mb']:.0f} | {r['model_server_peak_rss_mb']:.0f} "
                     f"| {r['joined']:,} | {r['quarantined']:,} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        print(json.dumps(run_one(*sys.argv[2:4])))
        sys.exit(0)
    if sys.argv[1:2] == ["--stages-one"]:
        print(json.dumps(run_stages(sys.argv[2], sys.argv[3:])))
        sys.exit(0)
    sys.exit(main())
