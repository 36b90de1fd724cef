"""Processing entry points: `python -m steps.entrypoints prepare|join-compare|gate ...`.

Each reads the SageMaker Processing folder contract under --root (default /opt/ml/processing):
`input/<name>/` is what the pipeline downloaded, `output/<name>/` is what it uploads, `work/` is
scratch. It lays a run folder out as the local runner does and calls the same stage functions.
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
from pathlib import Path
from typing import Any

from steps import aws_claims, aws_models, compare, gate, join, names, prepare, report, transform_metrics
from steps.publish import publish_run
from steps.aws_settings import AwsSettings, load_aws_config
from steps.capture_files import HOUR
from steps.config import Config, parse_utc, to_mapping

log = logging.getLogger("shadow_eval.entrypoints")

PROCESSING_ROOT = "/opt/ml/processing"
DEFAULT_WINDOW = dt.timedelta(hours=24)


def main(argv: list[str] | None = None) -> int:
    """Parse the stage and its arguments, run it; exit status 0 on success."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    args = _parser().parse_args(argv)
    try:
        args.stage(args)
    except aws_models.ModelAccessError as exc:
        log.error("%s", exc)
        return 1
    return 0


def run_prepare(args: argparse.Namespace, boto3_session: Any = None) -> dict[str, Any]:
    """Pick the package, read the capture window, create the replay Models; returns models.json's content.

    models.json `route` tells the pipeline what follows: "replay" (Transform jobs, then JoinCompare),
    "no-replay" (no record to replay: JoinCompare alone, which ends Inconclusive) or "skip" (no package
    to evaluate, or another execution already evaluates it; `reason` says which).
    """
    root = Path(args.root)
    config, settings = _config(root)
    session = boto3_session or _boto3(settings)
    end = parse_utc(args.window_end) if args.window_end else _hour(dt.datetime.now(dt.timezone.utc))
    start = parse_utc(args.window_start) if args.window_start else end - DEFAULT_WINDOW
    sagemaker = session.client("sagemaker")
    package_arn, reason = args.candidate_package_arn, ""
    if not package_arn:
        package_arn, reason = _scheduled_package(sagemaker, args, config, settings, start, end)
    package = status = None
    if package_arn:
        package = sagemaker.describe_model_package(ModelPackageName=package_arn)
        status = package["ModelApprovalStatus"]
        reason = aws_claims.claim(session.client("s3"), settings, package_arn, status, start, end, args.run_id)
    info = {"run_id": args.run_id, "started_at": _now(), "candidate_package": package_arn or None,
            "status_at_start": status, "window_start": _iso(start), "window_end": _iso(end)}
    if reason:
        log.info("prepare: nothing to evaluate: %s", reason)
        return _write_prepared(root, info, {"route": "skip", "reason": reason, "candidate_package": package_arn})

    try:
        return _prepare_window(args, root, config, settings, session, sagemaker, package, start, end, info)
    except BaseException:
        # A failed Prepare must not leave its claim behind: the next execution would skip the package.
        aws_claims.release(session.client("s3"), settings, package_arn, status, start, end, args.run_id)
        raise


def _prepare_window(args: argparse.Namespace, root: Path, config: Config, settings: AwsSettings, session: Any,
                    sagemaker: Any, package: dict[str, Any], start: dt.datetime, end: dt.datetime,
                    info: dict[str, Any]) -> dict[str, Any]:
    """Download the window, prepare the replay input, create the replay Models; write models.json."""
    package_arn = package["ModelPackageArn"]
    capture_root = root / "work" / "capture"
    local = capture_root / args.endpoint / args.variant
    local.mkdir(parents=True, exist_ok=True)  # an empty window is an empty folder, not a missing one
    fetched = download_hours(session.client("s3"), f"{args.capture_s3_uri.rstrip('/')}/{args.endpoint}/{args.variant}",
                             local, start - HOUR, end)
    log.info("prepare: %d capture objects in [%s, %s)", fetched, start, end)
    config = dataclasses.replace(config, capture=dataclasses.replace(
        config.capture, root=str(capture_root), endpoint=args.endpoint, variant=args.variant,
        window_start=start, window_end=end))
    prepared = prepare.run(config, _run_dir(root, args.run_id))
    _move(_run_dir(root, args.run_id) / "prepare", root / "output" / "prepare")
    models = {"route": "no-replay", "reason": "no captured records to replay in the window",
              "candidate_package": package_arn, "candidate_model": "", "production_model": "",
              "production_replay": 0}
    if prepared.prepared:
        aws_models.create_candidate_model(sagemaker, args.candidate_model_name, package, settings)
        production = aws_models.create_production_model(sagemaker, args.production_model_name, args.endpoint,
                                                        args.variant, settings)
        models.update(route="replay", reason="", candidate_model=args.candidate_model_name,
                      production_model=production, production_replay=int(bool(production)))
    info.update(candidate_model=models["candidate_model"], production_model=models["production_model"],
                prepare=prepared.to_json(), config=to_mapping(config))
    return _write_prepared(root, info, models)


def _write_prepared(root: Path, info: dict[str, Any], models: dict[str, Any]) -> dict[str, Any]:
    (root / "output" / "prepare").mkdir(parents=True, exist_ok=True)  # Processing uploads the folder even if empty
    _write_json(root / "output" / "run" / "run.json", {**info, "route": models["route"], "reason": models["reason"]})
    _write_json(root / "output" / "run" / "models.json", models)
    return models


def _scheduled_package(sagemaker: Any, args: argparse.Namespace, config: Config, settings: AwsSettings,
                       start: dt.datetime, end: dt.datetime) -> tuple[str, str]:
    """(package to evaluate, "") or ("", why not) for a run started without CandidatePackageArn."""
    from steps.backends.registry_sagemaker import pending_packages

    group = config.registry.group
    pending = pending_packages(sagemaker, group)
    if not pending:
        return "", f"no package in {group} is PendingManualApproval"
    if settings.pending_packages == "newest":
        log.info("prepare: %d package(s) pending in %s; evaluating the newest, %s", len(pending), group, pending[0])
        return pending[0], ""
    started = [start_evaluation(sagemaker, settings, args, arn, start, end) for arn in pending]
    return "", f"started one execution for each of the {len(started)} pending package(s): {', '.join(started)}"


def start_evaluation(sagemaker: Any, settings: AwsSettings, args: argparse.Namespace, package_arn: str,
                     start: dt.datetime, end: dt.datetime) -> str:
    """Start an execution for one package over this window; a retried step starts no second one."""
    token = hashlib.sha256(f"{args.run_id} {package_arn}".encode()).hexdigest()[:64]
    params = {"CandidatePackageArn": package_arn, "WindowStart": _iso(start), "WindowEnd": _iso(end),
              "CaptureS3Uri": args.capture_s3_uri, "ProductionEndpoint": args.endpoint,
              "ProductionVariant": args.variant}
    response = sagemaker.start_pipeline_execution(
        PipelineName=settings.pipeline_name, ClientRequestToken=token,
        PipelineExecutionDescription=f"shadow-eval of {package_arn} (started by execution {args.run_id})",
        PipelineParameters=[{"Name": k, "Value": v} for k, v in sorted(params.items())])
    return response["PipelineExecutionArn"]


def run_join_compare(args: argparse.Namespace, boto3_session: Any = None, catalog: Any = None) -> dict[str, Any]:
    """Join, compare, decide, report and publish the tables; returns evaluation.json's content."""
    root = Path(args.root)
    config, settings = _config(root)
    session = boto3_session or _boto3(settings)
    info = json.loads((root / "input" / "run" / "run.json").read_text(encoding="utf-8"))
    run_dir = _run_dir(root, args.run_id)
    _link(root / "input" / "prepare", run_dir / "prepare")
    for side in ("candidate", "production"):
        if (root / "input" / "replay" / side).is_dir():
            _link(root / "input" / "replay" / side, run_dir / "replay" / side)
    # The GroundTruthS3Uri parameter decides (empty: no labels); the config's S3 root is only its default.
    truth_root = None
    if args.ground_truth_s3_uri:
        start = parse_utc(info["config"]["capture"]["window_start"])
        truth_root = root / "work" / "ground-truth"
        download_hours(session.client("s3"), args.ground_truth_s3_uri.rstrip("/"), truth_root, start - HOUR, None)
    config = dataclasses.replace(config, ground_truth=dataclasses.replace(
        config.ground_truth, root=str(truth_root) if truth_root else None))
    joined = join.run(config, run_dir)
    comparison = compare.run(config, run_dir)
    # --- issue 13 (operational): what the cloud measured of the transform jobs the pipeline names (--transform-job).
    comparison = transform_metrics.attach(comparison, session, getattr(args, "transform_job", None))
    # The pipeline's Approve or Reject step records the verdict, after the ConditionStep read it.
    decision = gate.run(config, run_dir, comparison, joined.accounting, None, info["candidate_package"],
                        info["status_at_start"], args.run_id)
    evaluation = json.loads((run_dir / "report" / "evaluation.json").read_text(encoding="utf-8"))
    report.run(run_dir, {**info, "report_uri": args.report_s3_uri}, joined.accounting, comparison, decision)
    catalog = catalog or _glue(args.tables_s3_uri, config, settings, session)
    publish_run(catalog, run_dir, {**info, "run_id": args.run_id}, joined.accounting, comparison, decision,
                args.report_s3_uri)
    _move(run_dir / "join", root / "output" / "join")
    _move(run_dir / "report", root / "output" / "report")
    return evaluation


def run_gate(args: argparse.Namespace, boto3_session: Any = None, registry: Any = None) -> dict[str, Any]:
    """Record the verdict the ConditionStep routed here, compare-and-set from the status at start."""
    from steps.backends.registry_sagemaker import SageMakerRegistry

    root = Path(args.root)
    _, settings = _config(root)
    info = json.loads((root / "input" / "run" / "run.json").read_text(encoding="utf-8"))
    evaluation = json.loads((root / "input" / "report" / "evaluation.json").read_text(encoding="utf-8"))
    if evaluation["decision"] != args.verdict:
        raise SystemExit(f"gate: evaluation.json says {evaluation['decision']}, this step records {args.verdict}")
    package = info["candidate_package"]
    if not package:
        log.warning("gate: no candidate package; registry untouched")
        return {"package_id": None, "updated": False}
    registry = registry or SageMakerRegistry((boto3_session or _boto3(settings)).client("sagemaker"))
    summary = (root / "input" / "report" / "summary.md").read_text(encoding="utf-8")
    # Inconclusive is a compare-and-set from the status at start to itself: description and history say why.
    outcome = gate.record_verdict(registry, package, info["status_at_start"], args.verdict, summary, args.run_id,
                                  args.report_s3_uri)
    log.info("gate: %s", outcome)
    return outcome


# ---------------------------------------------------------------- AWS pieces the stages need

def download_hours(s3: Any, prefix_uri: str, target: Path, start: dt.datetime, end: dt.datetime | None) -> int:
    """Copy objects under `<prefix>/yyyy/mm/dd/hh/` for hours in [floor(start), end) into target, same layout."""
    bucket, _, prefix = prefix_uri[len("s3://"):].partition("/")
    hour, count = _hour(start), 0
    stop = end or dt.datetime.now(dt.timezone.utc)
    paginator = s3.get_paginator("list_objects_v2")
    while hour < stop:
        folder = f"{prefix}/{hour:%Y/%m/%d/%H}/"
        for page in paginator.paginate(Bucket=bucket, Prefix=folder):
            for item in page.get("Contents", []):
                local = target / item["Key"][len(prefix) + 1:]
                local.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, item["Key"], str(local))
                count += 1
        hour += HOUR
    return count


# ---------------------------------------------------------------- folders and arguments

def _config(root: Path) -> tuple[Config, AwsSettings]:
    files = sorted((root / "input" / "config").glob("*.y*ml"))
    if len(files) != 1:
        raise SystemExit(f"expected one YAML config in {root / 'input' / 'config'}, found {len(files)}")
    return load_aws_config(files[0])


def _run_dir(root: Path, run_id: str) -> Path:
    """`work/runs/<run_id>`: the stages take the run id from the folder name, as locally."""
    run_dir = root / "work" / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        return
    target.symlink_to(source.resolve(), target_is_directory=True)


def _move(source: Path, target: Path) -> None:
    """Put a stage's folder where Processing uploads it from (replacing what a retry left)."""
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(source), str(target))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")


def _glue(tables_uri: str, config: Config, settings: AwsSettings, session: Any) -> Any:
    from steps.backends.catalog_glue import GlueCatalog

    return GlueCatalog(tables_uri, config.tables.database, session, settings.athena_workgroup,
                       kms_key_id=settings.kms_key_id)


def _boto3(settings: AwsSettings) -> Any:
    import boto3

    return boto3.Session(region_name=settings.region)


def _hour(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.timezone.utc).replace(minute=0, second=0, microsecond=0)


def _iso(value: dt.datetime) -> str:
    return value.isoformat(timespec="seconds").replace("+00:00", "Z")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m steps.entrypoints")
    stages = parser.add_subparsers(required=True, metavar="STAGE")

    def stage(name: str, function: Any, help_text: str) -> argparse.ArgumentParser:
        sub = stages.add_parser(name, help=help_text)
        sub.add_argument("--root", default=PROCESSING_ROOT, help="Processing folder root (tests use a tmp folder)")
        sub.add_argument("--run-id", required=True, type=names.argument("run id"))
        sub.set_defaults(stage=function)
        return sub

    p = stage("prepare", run_prepare, "capture window -> replay input, records, candidate Model")
    for name in ("--capture-s3-uri", "--candidate-model-name", "--production-model-name"):
        p.add_argument(name, required=True)
    p.add_argument("--endpoint", required=True, type=names.argument("endpoint"))
    p.add_argument("--variant", required=True, type=names.argument("variant"))
    for name in ("--window-start", "--window-end"):
        p.add_argument(name, default="")
    p.add_argument("--candidate-package-arn", default="", type=names.argument("package id", optional=True))
    j = stage("join-compare", run_join_compare, "join, compare, report, tables, evaluation.json")
    j.add_argument("--ground-truth-s3-uri", default="")
    j.add_argument("--report-s3-uri", required=True)
    j.add_argument("--tables-s3-uri", required=True)
    j.add_argument("--transform-job", action="append", default=[], metavar="SIDE:GROUP=NAME",
                   help="a transform job of the replay, e.g. candidate:csv=<TransformJobName> (repeat per job)")
    g = stage("gate", run_gate, "record the verdict in the Model Registry (compare-and-set)")
    g.add_argument("--verdict", required=True, choices=("Approved", "Rejected", "Inconclusive"))
    g.add_argument("--report-s3-uri", required=True)
    return parser


if __name__ == "__main__":
    sys.exit(main())
