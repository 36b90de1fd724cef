"""The SageMaker Pipeline: the local stages as Processing jobs, the replay as Batch Transform jobs.

    Prepare ─▶ Route (models.json route)
      replay:    ReplayCandidate-<group> ─▶ ReplayProductionSwitch
                   ├ noise floor: ReplayProduction-<group> ─▶ JoinCompareWithProduction ─▶ GateWithProduction
                   └ else:        JoinCompare ─▶ Gate
      no-replay: NothingToReplay ─▶ JoinCompareNoReplay ─▶ GateNoReplay    (ends Inconclusive)
      skip:      nothing (no package pending, or a duplicate event): the execution Succeeds
    Gate*: decision Approved ─▶ Approve*
           Rejected          ─▶ Reject* ─▶ Rejected* (FailStep)
           Inconclusive      ─▶ KeepPending* ─▶ Inconclusive* (FailStep)

The tail is built once per branch because SageMaker Pipelines cannot rejoin after a ConditionStep: a step
that depends on a step in the branch not taken never runs (aws/sagemaker-python-sdk#3565).
`get_pipeline` builds; it never creates, starts or describes anything, and opens no socket as
long as the environment opts out of telemetry (docs/aws.md).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
from pathlib import Path
from typing import Any

from steps.aws_settings import AwsSettings, replay_groups
from steps.config import Config

log = logging.getLogger(__name__)

PROCESSING = "/opt/ml/processing"
ENTRYPOINT = ["python3", "-m", "steps.entrypoints"]
_GROUP_STEP = {"csv": "csv", "jsonlines": "jsonlines", "json": "json", "binary": "binary"}


def get_pipeline(config: Config, settings: AwsSettings, session: Any = None) -> Any:
    """The shadow-eval Pipeline for this config; every parameter has a default."""
    sdk_environment(settings)
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join
    from sagemaker.core.workflow.parameters import ParameterBoolean, ParameterString
    from sagemaker.mlops.workflow.pipeline import Pipeline

    _validate_sdk_config_once()
    session = session or pipeline_session(settings)
    capture_default = config.capture.root if config.capture.root.startswith("s3://") else ""
    params = {
        "CandidatePackageArn": ParameterString("CandidatePackageArn", default_value=settings.candidate_package_arn),
        "ProductionEndpoint": ParameterString("ProductionEndpoint", default_value=config.capture.endpoint or ""),
        "ProductionVariant": ParameterString("ProductionVariant", default_value=config.capture.variant or "AllTraffic"),
        "CaptureS3Uri": ParameterString("CaptureS3Uri", default_value=capture_default),
        "WindowStart": ParameterString("WindowStart", default_value=_iso(config.capture.window_start)),
        "WindowEnd": ParameterString("WindowEnd", default_value=_iso(config.capture.window_end)),
        "GroundTruthS3Uri": ParameterString("GroundTruthS3Uri", default_value=_s3_or_empty(config.ground_truth.root)),
        "OutputS3Uri": ParameterString("OutputS3Uri", default_value=settings.output_s3_uri),
        "ConfigS3Uri": ParameterString("ConfigS3Uri", default_value=config_uri(config)),
        "ProcessingInstanceType": ParameterString("ProcessingInstanceType",
                                                  default_value=settings.processing_instance_type),
        "TransformInstanceType": ParameterString("TransformInstanceType",
                                                 default_value=settings.transform_instance_type),
        "ReplayProduction": ParameterBoolean("ReplayProduction", default_value=config.replay.noise_floor),
    }
    builder = _Builder(config, settings, session, params, ExecutionVariables.PIPELINE_EXECUTION_ID)
    prepare = builder.prepare()
    candidate = [builder.replay(prepare, "candidate", group) for group in replay_groups(settings, config)]
    production = [builder.replay(prepare, "production", group) for group in replay_groups(settings, config)]
    switch = builder.switch(production, builder.tail("WithProduction", candidate + production),
                            builder.tail("", candidate))
    route = builder.route([*candidate, switch], builder.tail("NoReplay", []))
    return Pipeline(name=settings.pipeline_name, parameters=list(params.values()),
                    steps=[prepare, route], sagemaker_session=session)


def sdk_environment(settings: AwsSettings) -> None:
    """Defaults the SDK must see before its first import; values already in the environment win.

    2026-11, sagemaker 3.27: importing sagemaker.mlops creates a boto3 client (so needs a region),
    and the SDK's telemetry threads resolve AWS hosts unless its config file opts out.
    """
    os.environ.setdefault("AWS_DEFAULT_REGION", settings.region)
    os.environ.setdefault("SAGEMAKER_USER_CONFIG_OVERRIDE", str(Path(__file__).with_name("sagemaker-sdk-defaults.yaml")))


def pipeline_session(settings: AwsSettings) -> Any:
    """A PipelineSession for the configured region (boto3 clients are lazy: no call here)."""
    import boto3
    from sagemaker.core.workflow.pipeline_context import PipelineSession

    boto_session = boto3.Session(region_name=settings.region)
    return PipelineSession(boto_session=boto_session, default_bucket=settings.bucket)


def config_uri(config: Config) -> str:
    """Where `pipeline upsert` puts the config the Processing jobs read: `config/<digest>/shadow-eval.yaml`.

    Keyed by content, so an upsert that fails after the upload leaves the deployed pipeline reading
    the config it was built from, never a newer one.
    """
    from steps.config import to_mapping

    digest = hashlib.sha256(json.dumps(to_mapping(config), sort_keys=True).encode()).hexdigest()[:16]
    return config.aws.uri("config", digest, "shadow-eval.yaml")


class _Builder:
    """Builds each step from the shared parameters; one instance per get_pipeline call."""

    def __init__(self, config: Config, settings: AwsSettings, session: Any, params: dict, run_id: Any):
        self.config, self.settings, self.session = config, settings, session
        self.params, self.run_id = params, run_id
        from sagemaker.core.workflow.functions import Join

        self.candidate_model = Join(on="-", values=["shadow-eval", run_id, "candidate"])
        """Model name Prepare creates; a pipeline expression, so definition() never calls DescribeModel."""
        self.production_model = Join(on="-", values=["shadow-eval", run_id, "production"])
        """The production model's copy Prepare creates under the ModelRole (when the endpoint has one)."""
        self.models_file = self._property_file("PreparedModels", "run", "models.json")
        self.replayed: dict[str, tuple[str, str]] = {}
        """TransformStep name -> (side, group), for JoinCompare's --transform-job arguments."""

    def run_uri(self, *parts: str) -> Any:
        """`<OutputS3Uri>/runs/<execution id>/<parts>`, as one flat Join."""
        from sagemaker.core.workflow.functions import Join

        return Join(on="/", values=[self.params["OutputS3Uri"], "runs", self.run_id, *parts])

    def prepare(self) -> Any:
        from sagemaker.mlops.workflow.steps import ProcessingStep

        p = self.params
        args = self._processor().run(
            inputs=[self._input("config", p["ConfigS3Uri"])],
            outputs=[self._output("prepare", "prepare"), self._output("run", "run")],
            arguments=["prepare", "--run-id", self.run_id,
                       "--capture-s3-uri", p["CaptureS3Uri"], "--endpoint", p["ProductionEndpoint"],
                       "--variant", p["ProductionVariant"], "--window-start", p["WindowStart"],
                       "--window-end", p["WindowEnd"], "--candidate-package-arn", p["CandidatePackageArn"],
                       "--candidate-model-name", self.candidate_model,
                       "--production-model-name", self.production_model],
            kms_key=self.settings.kms_key_id)
        return ProcessingStep(name="Prepare", step_args=args, property_files=[self.models_file],
                              description="Pick the package (the newest pending one when none is given), read "
                                          "the capture window, create the candidate and production replay Models")

    def replay(self, prepare: Any, side: str, group: str) -> Any:
        from sagemaker.core.transformer import Transformer
        from sagemaker.core.workflow.functions import Join
        from sagemaker.mlops.workflow.steps import TransformStep

        knobs = group_knobs(group, self.config)
        model_name = self.candidate_model if side == "candidate" else self.production_model
        prepared = prepare.properties.ProcessingOutputConfig.Outputs["prepare"].S3Output.S3Uri
        replay = self.config.replay
        transformer = Transformer(
            model_name=model_name, instance_count=self.settings.transform_instance_count,
            instance_type=self.params["TransformInstanceType"], strategy=knobs["batch_strategy"],
            assemble_with=knobs["assemble_with"], accept=knobs["accept"],
            output_path=self.run_uri("replay", side, group, ""),
            max_payload=replay.max_payload_mb, max_concurrent_transforms=replay.max_concurrent_transforms,
            output_kms_key=self.settings.kms_key_id, volume_kms_key=self.settings.kms_key_id,
            sagemaker_session=self.session)
        processing = knobs["data_processing"] or {}
        args = transformer.transform(
            # The trailing / keeps the S3Prefix from also matching replay-input/<group>-something.
            data=Join(on="/", values=[prepared, "replay-input", group, ""]),
            content_type=knobs["content_type"], split_type=knobs["split_type"],
            input_filter=processing.get("InputFilter"), join_source=processing.get("JoinSource"),
            output_filter=processing.get("OutputFilter"),
            model_client_config={"InvocationsTimeoutInSeconds": replay.invocation_timeout_s,
                                 "InvocationsMaxRetries": replay.invocation_max_retries})
        title = "Candidate" if side == "candidate" else "Production"
        step = TransformStep(name=f"Replay{title}-{_GROUP_STEP[group]}", step_args=args,
                             description=f"Replay the {group} records through the {side} model")
        self.replayed[step.name] = (side, group)
        return step

    def route(self, replay: list, no_replay: list) -> Any:
        """Branch on Prepare's models.json route: replay, no-replay (straight to JoinCompare) or skip."""
        from sagemaker.core.workflow.conditions import ConditionEquals
        from sagemaker.mlops.workflow.condition_step import ConditionStep

        route = self._prepared("route")
        nothing = ConditionStep(name="NothingToReplay", conditions=[ConditionEquals(left=route, right="no-replay")],
                                if_steps=no_replay, else_steps=[],
                                description="No record to replay: JoinCompare alone (Inconclusive); else the "
                                            "run was skipped (models.json reason: no package pending, duplicate)")
        return ConditionStep(name="Route", conditions=[ConditionEquals(left=route, right="replay")],
                             if_steps=replay, else_steps=[nothing],
                             description="Replay when Prepare created the Models (models.json route)")

    def switch(self, production: list, with_production: list, candidate_only: list) -> Any:
        from sagemaker.core.workflow.conditions import ConditionEquals
        from sagemaker.mlops.workflow.condition_step import ConditionStep

        return ConditionStep(name="ReplayProductionSwitch",
                             conditions=[ConditionEquals(left=self.params["ReplayProduction"], right=True),
                                         ConditionEquals(left=self._prepared("production_replay"), right=1)],
                             if_steps=[*production, *with_production], else_steps=candidate_only,
                             description="Replay production too (the noise floor) when ReplayProduction is true "
                                         "and Prepare found the endpoint's model")

    def tail(self, suffix: str, replays: list) -> list:
        """JoinCompare and Gate for one branch; step names carry the suffix (no replays: NoReplay)."""
        from sagemaker.core.workflow.conditions import ConditionEquals
        from sagemaker.core.workflow.functions import Join, JsonGet
        from sagemaker.mlops.workflow.condition_step import ConditionStep
        from sagemaker.mlops.workflow.steps import ProcessingStep

        p = self.params
        evaluation = self._property_file(f"Evaluation{suffix}", "report", "evaluation.json")
        inputs = [self._input("config", p["ConfigS3Uri"]),
                  self._input("prepare", self.run_uri("prepare", "")),
                  self._input("run", self.run_uri("run", ""))]
        sides = ("candidate", "production") if suffix == "WithProduction" else ("candidate",) if replays else ()
        for side in sides:
            inputs.append(self._input(f"replay/{side}", self.run_uri("replay", side, "")))
        # The branch's own transform jobs (it depends on them): their duration and CloudWatch figures.
        jobs = []
        for replay in replays:
            side, group = self.replayed[replay.name]
            jobs += ["--transform-job", Join(on="", values=[f"{side}:{group}=", replay.properties.TransformJobName])]
        join_args = self._processor().run(
            inputs=inputs, outputs=[self._output("join", "join"), self._output("report", "report")],
            arguments=["join-compare", "--run-id", self.run_id, "--ground-truth-s3-uri", p["GroundTruthS3Uri"],
                       "--report-s3-uri", self.run_uri("report", "report.html"),
                       "--tables-s3-uri", Join(on="/", values=[p["OutputS3Uri"], "tables"]), *jobs],
            kms_key=self.settings.kms_key_id)
        join_compare = ProcessingStep(name=f"JoinCompare{suffix}", step_args=join_args, property_files=[evaluation],
                                      depends_on=replays or None,
                                      description="Join both answers, compare, write tables, report, evaluation.json")
        decision = JsonGet(step_name=join_compare.name, property_file=evaluation, json_path="decision")
        rejected = ConditionStep(
            name=f"IsRejected{suffix}", conditions=[ConditionEquals(left=decision, right="Rejected")],
            if_steps=self._verdict("Rejected", suffix), else_steps=self._verdict("Inconclusive", suffix),
            description="Rejected: record it and fail; otherwise Inconclusive: keep the package pending and fail")
        gate = ConditionStep(name=f"Gate{suffix}", conditions=[ConditionEquals(left=decision, right="Approved")],
                             if_steps=self._verdict("Approved", suffix), else_steps=[rejected],
                             description="Branch on evaluation.json decision (Approved, Rejected, Inconclusive)")
        return [join_compare, gate]

    def _verdict(self, status: str, suffix: str) -> list:
        """The step recording `status` in the Model Registry, then (unless Approved) the FailStep naming it."""
        from sagemaker.core.workflow.functions import Join
        from sagemaker.mlops.workflow.fail_step import FailStep
        from sagemaker.mlops.workflow.steps import ProcessingStep

        p = self.params
        args = self._processor().run(
            inputs=[self._input("config", p["ConfigS3Uri"]),
                    self._input("run", self.run_uri("run", "")),
                    self._input("report", self.run_uri("report", ""))],
            arguments=["gate", "--run-id", self.run_id, "--verdict", status,
                       "--report-s3-uri", self.run_uri("report", "report.html")],
            kms_key=self.settings.kms_key_id)
        name = {"Approved": "Approve", "Rejected": "Reject", "Inconclusive": "KeepPending"}[status]
        what = {"Approved": "Set Approved in the Model Registry (compare-and-set)",
                "Rejected": "Set Rejected in the Model Registry (compare-and-set)",
                "Inconclusive": "Keep the package PendingManualApproval; record why in its description"}[status]
        record = ProcessingStep(name=f"{name}{suffix}", step_args=args, description=what)
        if status == "Approved":
            return [record]
        # FailureReason starts "<status>:"; the report's summary.md says why.
        message = Join(on=" ", values=[f"{status}:", self._prepared("candidate_package"),
                                       "- see report/summary.md in the run folder", p["OutputS3Uri"], "runs",
                                       self.run_id])
        return [record, FailStep(name=f"{status}{suffix}", depends_on=[record], error_message=message)]

    def _prepared(self, key: str) -> Any:
        """A field of Prepare's models.json."""
        from sagemaker.core.workflow.functions import JsonGet

        return JsonGet(step_name="Prepare", property_file=self.models_file, json_path=key)

    def _processor(self) -> Any:
        from sagemaker.core.network import NetworkConfig
        from sagemaker.core.processing import Processor

        s = self.settings
        network = None
        if s.subnets:
            network = NetworkConfig(subnets=list(s.subnets), security_group_ids=list(s.security_group_ids))
        # Processing is one instance: the stages are not sharded, two instances would do the work twice.
        return Processor(role=s.role_arn, image_uri=s.image_uri, entrypoint=ENTRYPOINT, instance_count=1,
                         instance_type=self.params["ProcessingInstanceType"], volume_kms_key=s.kms_key_id,
                         output_kms_key=s.kms_key_id, network_config=network, sagemaker_session=self.session,
                         env={"SHADOW_EVAL_VERSION": _version(), "AWS_DEFAULT_REGION": s.region})

    def _input(self, name: str, uri: Any) -> Any:
        from sagemaker.core.shapes import ProcessingInput, ProcessingS3Input

        return ProcessingInput(input_name=name.replace("/", "-"), s3_input=ProcessingS3Input(
            s3_uri=uri, local_path=f"{PROCESSING}/input/{name}", s3_data_type="S3Prefix", s3_input_mode="File"))

    def _output(self, name: str, folder: str) -> Any:
        from sagemaker.core.shapes import ProcessingOutput, ProcessingS3Output
        from sagemaker.core.workflow.functions import Join

        return ProcessingOutput(output_name=name, s3_output=ProcessingS3Output(
            s3_uri=self.run_uri(folder), local_path=f"{PROCESSING}/output/{folder}",
            s3_upload_mode="EndOfJob"))

    @staticmethod
    def _property_file(name: str, output_name: str, path: str) -> Any:
        from sagemaker.core.workflow.properties import PropertyFile

        return PropertyFile(name=name, output_name=output_name, path=path)


def group_knobs(group: str, config: Config) -> dict[str, Any]:
    """CreateTransformJob knobs of a replay group, exactly as prepare writes them into replay-plan.json."""
    from steps import prepare

    return prepare.group_knobs(group, config.replay.batch_strategy)


def _validate_sdk_config_once() -> None:
    """Validate each distinct SDK defaults config once instead of on every lookup.

    2026-11, sagemaker-core 2.27.0: every config lookup and every Session (one per step) re-checks
    the whole defaults-config schema, 0.35 s each, 30 s per build. The check itself is kept.
    """
    from sagemaker.core.config import config as config_module
    from sagemaker.core.config.config_manager import SageMakerConfig

    if getattr(config_module.validate_sagemaker_config, "shadow_eval_once", False):
        return
    SageMakerConfig.validate_sagemaker_config = staticmethod(_once(SageMakerConfig.validate_sagemaker_config))
    config_module.validate_sagemaker_config = _once(config_module.validate_sagemaker_config)


def _once(validate: Any) -> Any:
    validated: set[str] = set()

    def validate_once(sagemaker_config: dict | None = None) -> None:
        key = json.dumps(sagemaker_config, sort_keys=True, default=str)
        if key not in validated:
            validate(sagemaker_config)
            validated.add(key)

    validate_once.shadow_eval_once = True  # type: ignore[attr-defined]
    return validate_once


def _iso(value: Any) -> str:
    return value.isoformat().replace("+00:00", "Z") if value else ""


def _s3_or_empty(root: str | None) -> str:
    return root if root and root.startswith("s3://") else ""


def _version() -> str:
    try:
        return importlib.metadata.version("shadow-eval")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
