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
import hashlib
import json
import logging
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

from steps import capture_stats, compare, gate, invocations, join, latency_noise, names, prepare, replay, report, \
    safe_files
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
    """Run every stage in-process; the registry is written last, once every table and report is in place.

    Re-running a run id finishes what is unfinished and rewrites its rows, provided nothing that shapes
    its results changed (models, config, package): otherwise it refuses (RunChanged).
    """
    if config.candidate.model is None:
        raise ConfigError("<run>", "candidate.model", "required: a model.tar.gz, a model folder or a container URL")
    if config.registry.kind != "local":
        raise ConfigError("<run>", "registry.kind", "the local runner records verdicts in the local registry; "
                          "the SageMaker Model Registry is updated by the pipeline (shadow-eval pipeline ...)")
    run_id = run_id or new_run_id()
    try:
        names.check("run id", run_id)
        if candidate_package is not None:
            names.check_package_id(candidate_package)
    except names.InvalidName as exc:
        raise ConfigError("<run>", "run_id" if "run id" in str(exc) else "candidate_package", str(exc)) from None
    workspace = Path(config.workspace)
    run_dir = workspace / "runs" / run_id
    registry = LocalRegistry(workspace / config.registry.path)
    run_info = _start_run(config, run_dir, run_id, registry, candidate_package)
    try:
        log.info("run %s: prepare", run_id)
        prepared = prepare.run(config, run_dir)
        plan = json.loads((run_dir / "prepare" / "replay-plan.json").read_text())
        for side, model in _replay_sides(config):
            _replay_side(config, run_dir, plan, side, model, run_info["fingerprint"][f"{side}_model"])
            if side == "production":  # the latency noise reference
                latency_noise.replay_again(config, run_dir, plan, model)

        log.info("run %s: join and compare", run_id)
        joined = join.run(config, run_dir)
        replay.forget_wrong_answers(run_dir)  # a resume asks the candidate again for what it got wrong
        accounting = joined.accounting
        comparison = compare.run(config, run_dir)
        run_info["prepare"] = prepared.to_json()

        decision = gate.run(config, run_dir, comparison, accounting, None,
                            run_info["candidate_package"], run_info["status_at_start"], run_id)
        paths = report.run(run_dir, run_info, accounting, comparison, decision)
        publish_run(LocalCatalog(workspace, config.tables.database), run_dir, run_info, accounting, comparison,
                    decision, str(paths["report.html"]))
    except Exception:
        log.error("run %s stopped before its verdict was recorded: the registry is untouched; fix the cause and "
                  "re-run with --run-id %s to finish it", run_id, run_id)
        raise
    gate.record(run_dir, comparison, accounting, decision, registry, run_info["candidate_package"],
                run_info["status_at_start"], run_id)
    return RunOutcome(run_id, run_dir, decision.status, decision.reasons, decision.task, accounting,
                      _headline(comparison), paths["report.html"], workspace / "shadow.duckdb")


_NOT_RESULTS = ("candidate.model", "production.model", "replay.invocation_timeout_s",
                "replay.invocation_max_retries", "replay.max_concurrent_transforms")
"""Config keys a resume may change: models are compared by digest (a model may move: a container's port,
a copied file), and how hard or how wide the replay tries changes no answer it gets."""


class RunChanged(ValueError):
    """A run id resumed with different inputs: its checkpoints would describe something else."""


def _start_run(config: Config, run_dir: Path, run_id: str, registry: LocalRegistry,
               candidate_package: str | None) -> dict[str, Any]:
    """Record what the run started from; a resumed run keeps its original start (and registry status).

    A resumed run must have the same fingerprint (model digests, config) and package as its start.
    """
    record = run_dir / "run.json"
    fingerprint = run_fingerprint(config)
    if record.exists():
        info = json.loads(record.read_text())
        changed = _changes(info, config, fingerprint, candidate_package)
        if changed:
            raise RunChanged(f"run {run_id} was started with different inputs ({'; '.join(changed)}): its "
                             f"checkpoints and tables describe those. Start a new run (omit --run-id), or resume "
                             f"with exactly what {record} records")
        info.setdefault("fingerprint", fingerprint)
        return info
    status = registry.describe(candidate_package).status if candidate_package else None
    info = {
        "run_id": run_id,
        "started_at": _utc_now(),
        "candidate_package": candidate_package,
        "status_at_start": status,
        "config": to_mapping(config),
        "fingerprint": fingerprint,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(info, indent=2, sort_keys=True))
    return info


def run_fingerprint(config: Config) -> dict[str, str | None]:
    """What shapes a run's results: each model's digest and the config's."""
    sides = dict(_replay_sides(config))
    mapping = to_mapping(config)
    for key in _NOT_RESULTS:
        section, field = key.split(".")
        mapping[section][field] = None
    text = json.dumps(mapping, sort_keys=True, default=str)
    return {"candidate_model": model_digest(config.candidate.model),
            "production_model": model_digest(sides["production"]) if "production" in sides else None,
            "config": "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()}


def _changes(info: dict[str, Any], config: Config, fingerprint: dict[str, str | None],
             candidate_package: str | None) -> list[str]:
    """What differs between a run's record and a resume of it, one phrase each."""
    changed = []
    if candidate_package is not None and candidate_package != info.get("candidate_package"):
        changed.append(f"candidate package {info.get('candidate_package')} -> {candidate_package}")
    recorded = info.get("fingerprint") or {}
    for key in ("candidate_model", "production_model"):
        if key in recorded and recorded[key] != fingerprint[key]:
            changed.append(f"{key.replace('_', ' ')} {recorded[key]} -> {fingerprint[key]}")
    before, now = _flat(info.get("config") or {}), _flat(json.loads(json.dumps(to_mapping(config), default=str)))
    keys = sorted(key for key in before.keys() | now.keys()
                  if before.get(key) != now.get(key) and key not in _NOT_RESULTS)
    changed += [f"{key} {before.get(key)!r} -> {now.get(key)!r}" for key in keys[:5]]
    if len(keys) > 5:
        changed.append(f"and {len(keys) - 5} more config keys")
    return changed


def _flat(mapping: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config mapping as {dotted key: value}."""
    if not isinstance(mapping, dict):
        return {prefix: mapping}
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        flat.update(_flat(value, f"{prefix}.{key}" if prefix else key))
    return flat


def model_digest(model: str | None) -> str | None:
    """A model's identity: sha256 of a model.tar.gz or of a folder's files, or the URL of a running container."""
    if model is None:
        return None
    if replay.is_url(model):
        # A container's address is no identity (it moves when restarted) and it cannot tell what it serves:
        # a resume trusts it, and answers join found wrong are asked again (replay.forget_wrong_answers).
        return "container"
    path = Path(model)
    digest = hashlib.sha256()
    try:
        files = [path] if not path.is_dir() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            digest.update(file.relative_to(path).as_posix().encode() + b"\0" if file != path else b"")
            with safe_files.open_regular(file) as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    except OSError as exc:
        raise ConfigError("<run>", "model", f"cannot read the model {model}: {exc.strerror or exc}; "
                          "give a readable model.tar.gz, model folder or container URL") from None
    return f"sha256:{digest.hexdigest()}"


def _replay_sides(config: Config) -> list[tuple[str, str]]:
    sides = [("candidate", config.candidate.model)]
    if config.production.model and config.replay.noise_floor:
        sides.append(("production", config.production.model))
    return sides


def _replay_side(config: Config, run_dir: Path, plan: dict, side: str, model: str, producer: str | None) -> None:
    results = {}
    for group, knobs in plan["groups"].items():
        if not knobs.get("files"):
            continue
        log.info("replay %s/%s through %s", side, group, model)
        measure = invocations.Measurements(side, group)
        result = replay.run(knobs, run_dir / "prepare" / "replay-input" / group,
                            run_dir / "replay" / side / group, model, config.replay,
                            run_dir / "logs" / f"model-server-{side}-{group}.log", side, measure,
                            producer=producer or "", records_path=getattr(config, side).output.records_path)
        measure.write(run_dir, result)
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
    except (RunChanged, names.InvalidName) as exc:
        print(f"shadow-eval: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (FileNotFoundError, ValueError) as exc:
        print(f"shadow-eval: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:  # a path that is a loop, a device, unwritable, full: say which, never a traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"shadow-eval: {where}{exc.strerror or exc}; check that path (it must be a readable, writable regular "
              "file or folder) and re-run", file=sys.stderr)
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
