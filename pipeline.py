"""shadow-eval: the only wiring. Runs the stages locally and is the command line.

    capture JSONL ─▶ Prepare ─▶ replay input ─┬─▶ ReplayCandidate ──────────┐
                        │                     └─▶ ReplayProduction (noise) ─┤
                        ▼                                                   ▼
              captured records + quarantine ───────────────────────▶ JoinCompare ◀── ground truth
                                                                            │
                                        tables, report.json/html, summary.md, evaluation.json
                                                                            ▼
                                        Gate ─▶ Approved / Rejected / Inconclusive in the registry

Each stage is `steps.<stage>.run(...)` over local folders. Here they run in-process, in order;
the SageMaker Pipeline runs the same functions in Processing jobs and a Transform job.

Exit status of `run`, `demo` and `regate`: 0 Approved, 3 Rejected, 4 Inconclusive (the evidence cannot
decide yet), 1 the run failed, 2 bad usage or config.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import re
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

from steps import capture_stats, compare, gate, join, prepare, replay, report
from steps.aws_cli import add_pipeline_commands
from steps.regate import add_regate_command
from steps.query import add_query_command, add_views_command
from steps.quicksight import add_quicksight_command
from steps.backends.catalog import LocalCatalog
from steps.publish import publish_run
from steps.backends.registry import LocalRegistry
from steps.config import Config, ConfigError, load_config, parse_utc, to_mapping

log = logging.getLogger("shadow_eval")

EXIT_APPROVED, EXIT_FAILED, EXIT_USAGE, EXIT_REJECTED, EXIT_INCONCLUSIVE = 0, 1, 2, 3, 4
EXIT_STATUS = {"Approved": EXIT_APPROVED, "Rejected": EXIT_REJECTED, "Inconclusive": EXIT_INCONCLUSIVE}
SIDES = ("candidate", "production")
_AWS_PACKAGES = {"sagemaker", "boto3", "botocore", "awswrangler"}
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


@dataclasses.dataclass(frozen=True)
class RunOutcome:
    run_id: str
    run_dir: Path
    decision: str
    reasons: tuple[str, ...]
    task: dict[str, Any]
    accounting: Any
    headline: dict[str, float | None]
    report_path: Path
    tables_path: Path

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "decision": self.decision,
            "reasons": list(self.reasons),
            "task": self.task,
            "records": {"captured": self.accounting.captured, "joined": self.accounting.joined,
                        "quarantined": self.accounting.quarantined},
            "coverage": self.accounting.coverage,
            "candidate_coverage": self.accounting.candidate_coverage,
            "quarantine_reasons": dict(self.accounting.by_reason),
            "quarantine_owners": self.accounting.by_owner,
            "metrics": self.headline,
            "report": str(self.report_path),
            "tables": str(self.tables_path),
        }


def new_run_id(now: dt.datetime | None = None) -> str:
    """A sortable, unique run id: UTC time plus a short random suffix."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def run_local(config: Config, run_id: str | None = None, candidate_package: str | None = None) -> RunOutcome:
    """Run every stage in-process. Re-running a run id finishes what is unfinished and rewrites its rows."""
    if config.candidate.model is None:
        raise ConfigError("<run>", "candidate.model", "required: a model.tar.gz, a model folder or a container URL")
    if config.registry.kind != "local":
        raise ConfigError("<run>", "registry.kind", "the local runner records verdicts in the local registry; "
                          "the SageMaker Model Registry is updated by the pipeline (shadow-eval pipeline ...)")
    run_id = run_id or new_run_id()
    if not _RUN_ID.match(run_id):
        raise ConfigError("<run>", "run_id", f"{run_id!r} must be letters, digits, _ and - (at most 64)")
    workspace = Path(config.workspace)
    run_dir = workspace / "runs" / run_id
    registry = LocalRegistry(workspace / config.registry.path)
    run_info = _start_run(config, run_dir, run_id, registry, candidate_package)

    log.info("run %s: prepare", run_id)
    prepared = prepare.run(config, run_dir)
    plan = json.loads((run_dir / "prepare" / "replay-plan.json").read_text())
    for side, model in _replay_sides(config):
        _replay_side(config, run_dir, plan, side, model)

    log.info("run %s: join and compare", run_id)
    joined = join.run(config, run_dir)
    accounting = joined.accounting
    comparison = compare.run(config, run_dir)
    run_info["prepare"] = prepared.to_json()

    decision = gate.run(config, run_dir, comparison, accounting, registry,
                        run_info["candidate_package"], run_info["status_at_start"], run_id)
    paths = report.run(run_dir, run_info, accounting, comparison, decision)

    publish_run(LocalCatalog(workspace, config.tables.database), run_dir, run_info, accounting, comparison,
                decision, str(paths["report.html"]))
    return RunOutcome(run_id, run_dir, decision.status, decision.reasons, decision.task, accounting,
                      _headline(comparison),
                      paths["report.html"], workspace / "shadow.duckdb")


def _start_run(config: Config, run_dir: Path, run_id: str, registry: LocalRegistry,
               candidate_package: str | None) -> dict[str, Any]:
    """Record what the run started from; a resumed run keeps its original start (and registry status)."""
    record = run_dir / "run.json"
    if record.exists():
        return json.loads(record.read_text())
    status = registry.describe(candidate_package).status if candidate_package else None
    info = {
        "run_id": run_id,
        "started_at": _utc_now(),
        "candidate_package": candidate_package,
        "status_at_start": status,
        "config": to_mapping(config),
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(info, indent=2, sort_keys=True))
    return info


def _replay_sides(config: Config) -> list[tuple[str, str]]:
    sides = [("candidate", config.candidate.model)]
    if config.production.model and config.replay.noise_floor:
        sides.append(("production", config.production.model))
    return sides


def _replay_side(config: Config, run_dir: Path, plan: dict, side: str, model: str) -> None:
    results = {}
    for group, knobs in plan["groups"].items():
        if not knobs.get("files"):
            continue
        log.info("replay %s/%s through %s", side, group, model)
        result = replay.run(knobs, run_dir / "prepare" / "replay-input" / group,
                            run_dir / "replay" / side / group, model, config.replay,
                            run_dir / "logs" / f"model-server-{side}-{group}.log", side)
        results[group] = result.to_json()
    (run_dir / "replay").mkdir(parents=True, exist_ok=True)  # an empty window replays nothing
    (run_dir / "replay" / f"{side}.json").write_text(json.dumps(results, indent=2, sort_keys=True))


def _headline(comparison) -> dict[str, float | None]:
    names = ("exact_match_rate", "tolerant_match_rate", "label_agreement", "cohen_kappa", "accuracy")
    return {name: (m.value if (m := comparison.metric(name)) else None) for name in names}


def _utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


# ---------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if getattr(args, "json", False) else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return args.command(args)
    except ConfigError as exc:
        print(f"shadow-eval: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (FileNotFoundError, ValueError) as exc:
        print(f"shadow-eval: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in _AWS_PACKAGES:
            raise
        print(f"shadow-eval: this command needs the AWS extras ({exc.name} is not installed): run `make aws`",
              file=sys.stderr)
        return EXIT_FAILED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shadow-eval", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="build a small world and run the whole shadow evaluation on it")
    demo.add_argument("--workspace", default=".shadow-eval/demo")
    demo.add_argument("--requests", type=int, default=600, help="calls sent to production (default 600)")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--json", action="store_true", help="print one JSON object")
    demo.set_defaults(command=_cmd_demo)

    run = commands.add_parser("run", help="shadow-evaluate a candidate on captured traffic")
    run.add_argument("--config", required=True)
    run.add_argument("--workspace")
    run.add_argument("--capture", help="capture root (overrides capture.root)")
    run.add_argument("--window-start", help="ISO-8601 UTC, inclusive")
    run.add_argument("--window-end", help="ISO-8601 UTC, exclusive")
    run.add_argument("--candidate", help="candidate MODEL: model.tar.gz, folder or container URL")
    run.add_argument("--production", help="production MODEL, replayed for the noise floor")
    run.add_argument("--candidate-package", help="registry package id to approve or reject")
    run.add_argument("--ground-truth", help="Model Monitor ground-truth folder")
    run.add_argument("--run-id", help="re-use a run id to finish an interrupted run")
    run.add_argument("--json", action="store_true", help="print one JSON object")
    run.set_defaults(command=_cmd_run)

    stats = commands.add_parser("capture-stats", help="what a data-capture folder holds")
    stats.add_argument("root")
    stats.add_argument("--endpoint")
    stats.add_argument("--variant")
    stats.add_argument("--window-start")
    stats.add_argument("--window-end")
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    stats.set_defaults(command=_cmd_capture_stats)

    add_pipeline_commands(commands)  # the SageMaker side; its AWS imports happen only when it runs
    add_regate_command(commands)
    add_query_command(commands)
    add_views_command(commands)
    add_quicksight_command(commands)
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config, {
        "workspace": args.workspace,
        "capture.root": args.capture,
        "capture.window_start": args.window_start,
        "capture.window_end": args.window_end,
        "candidate.model": args.candidate,
        "production.model": args.production,
        "ground_truth.root": args.ground_truth,
    })
    outcome = run_local(config, args.run_id, args.candidate_package)
    return _finish(outcome, args.json)


def _cmd_demo(args: argparse.Namespace) -> int:
    from steps import demo  # trains models; imported only when asked for

    workspace = Path(args.workspace)
    if (workspace / "demo.yaml").exists():
        log.info("replacing the previous demo world in %s", workspace)
        shutil.rmtree(workspace)
    world = demo.build_world(workspace, requests=args.requests, seed=args.seed)
    config = load_config(world.config_path)
    outcome = run_local(config, candidate_package=world.package_id)
    return _finish(outcome, args.json)


def _cmd_capture_stats(args: argparse.Namespace) -> int:
    window = {k: parse_utc(v) if v else None for k, v in
              (("window_start", args.window_start), ("window_end", args.window_end))}
    stats = capture_stats.collect(Path(args.root), endpoint=args.endpoint, variant=args.variant, **window)
    print(json.dumps(stats, indent=2, sort_keys=True) if args.json else capture_stats.render_text(stats))
    return 0


def _finish(outcome: RunOutcome, as_json: bool) -> int:
    if as_json:
        print(json.dumps(outcome.to_json(), indent=2, sort_keys=True))
    else:
        a = outcome.accounting
        print(f"run {outcome.run_id}: {outcome.decision}")
        for reason in outcome.reasons:
            print(f"  - {reason}")
        print(f"  records: {a.captured} captured = {a.joined} joined + {a.quarantined} quarantined"
              f" (coverage {a.coverage:.2%})")
        owners = ", ".join(f"{owner} {count}" for owner, count in a.by_owner.items() if count)
        if owners:
            print(f"    quarantined by owner: {owners}")
        for reason, count in sorted(a.by_reason.items()):
            print(f"    quarantined {reason}: {count}")
        for name, value in outcome.headline.items():
            if value is not None:
                print(f"  {name}: {value:.4f}")
        print(f"  report: {outcome.report_path}")
        print(f"  tables: {outcome.tables_path}")
    return EXIT_STATUS[outcome.decision]


if __name__ == "__main__":
    sys.exit(main())
