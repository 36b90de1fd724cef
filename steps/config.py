"""Typed, layered run configuration, checked once at load.

A YAML file maps onto the frozen dataclasses below. Unknown keys, wrong types and
out-of-range values are errors that name the file and the dotted key. Relative paths
are kept as written; callers resolve them against the working directory.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from analysis.gate import GATE_METRICS
from steps import names, safe_files

InputFormat = Literal["auto", "csv", "jsonlines", "json", "binary"]
OutputFormat = Literal["auto", "csv", "json", "jsonlines"]
Severity = Literal["critical", "warning"]


class ConfigError(ValueError):
    """A configuration problem, with the file and the dotted key it concerns."""

    def __init__(self, source: str, key: str, problem: str):
        self.source, self.key, self.problem = source, key, problem
        super().__init__(f"{source}: {key}: {problem}")


@dataclasses.dataclass(frozen=True)
class CaptureConfig:
    root: str = "capture"
    """Folder laid out as SageMaker writes capture: <root>/<endpoint>/<variant>/yyyy/mm/dd/hh/*.jsonl."""
    endpoint: str | None = None
    """Only this endpoint's folder; None reads every endpoint under root."""
    variant: str | None = None
    """Only this variant's folder; None reads every variant."""
    window_start: dt.datetime | None = None
    """Inclusive UTC start; hour folders are pre-selected, records filtered by inferenceTime."""
    window_end: dt.datetime | None = None
    """Exclusive UTC end."""
    input_format: InputFormat = "auto"
    """How request bodies split into records; auto decides from the observed content type."""
    instances_path: str = "instances"
    """JMESPath from a JSON request document to its list of records."""


@dataclasses.dataclass(frozen=True)
class OutputParsing:
    format: OutputFormat = "auto"
    """auto decides from the response content type."""
    records_path: str | None = None
    """JMESPath from a JSON response document to its list of records; None tries `predictions`."""
    score_path: str | None = None
    """JMESPath from one record to its score; None tries `score`, then a bare number."""
    label_path: str | None = None
    """JMESPath from one record to its label; None tries `predicted_label`, then `label`."""
    score_column: int | None = 0
    """CSV: column holding the score."""
    label_column: int | None = None
    """CSV: column holding the label; None derives it from the score and label_threshold."""
    label_threshold: float = 0.5
    """With no label in the answer, a score in [0, 1] gives the label `score >= label_threshold`."""


@dataclasses.dataclass(frozen=True)
class ModelSide:
    model: str | None = None
    """A model.tar.gz, an unpacked model folder, or the http(s) URL of a running container."""
    output: OutputParsing = OutputParsing()


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
    batch_strategy: Literal["MultiRecord", "SingleRecord"] = "MultiRecord"
    max_payload_mb: int = 6
    max_concurrent_transforms: int | None = 1
    """None asks the container's /execution-parameters, as SageMaker does."""
    invocation_timeout_s: int = 600
    invocation_max_retries: int = 3
    noise_floor: bool = True
    """Also replay the production model through the same path, when production.model is set."""
    noise_repeat_batches: int = 200
    """Production batches (whole files, per group) replayed a second time: the latency noise reference; 0: none."""


@dataclasses.dataclass(frozen=True)
class GroundTruthConfig:
    root: str | None = None
    """Model Monitor ground-truth folder (yyyy/mm/dd/hh/*.jsonl); None runs without labels."""
    records_path: str = "instances"
    """JMESPath from a JSON ground-truth document to its list of labels (multi-record calls)."""
    label_path: str = "label"
    """JMESPath from one JSON ground-truth record to its label."""


@dataclasses.dataclass(frozen=True)
class SliceConfig:
    """One way to cut the records into segments, each compared on its own (so a bad one cannot hide)."""

    name: str
    """Shown in slice names: `<name>=<value>`."""
    by: Literal["hour", "feature", "attribute"] = "feature"
    """hour: the UTC inference hour; feature: a value of the input record; attribute: a CustomAttributes key."""
    column: int | None = None
    """feature, CSV input: 0-based column of the record."""
    path: str | None = None
    """feature, JSON input: JMESPath from the record to the value."""
    bins: tuple[float, ...] = ()
    """Ascending bin edges for a numeric value ([a, b) bins, open-ended at both ends); empty: one slice per value."""
    key: str | None = None
    """attribute: the key in the call's CustomAttributes (JSON object, or `k=v` pairs split by ; or ,)."""

    def __post_init__(self):
        where = f"compare.slices[{self.name}]"
        if self.by == "feature" and (self.column is None) == (self.path is None):
            raise ConfigError("<config>", where, "a feature slice needs exactly one of column (CSV) or path (JSON)")
        if self.by == "attribute" and not self.key:
            raise ConfigError("<config>", where, "an attribute slice needs key")
        if self.by != "feature" and (self.column is not None or self.path or self.bins):
            raise ConfigError("<config>", where, "column, path and bins apply to feature slices only")
        if self.column is not None and self.column < 0:
            raise ConfigError("<config>", f"{where}.column", "must be 0 or more")
        if list(self.bins) != sorted(set(self.bins)):
            raise ConfigError("<config>", f"{where}.bins", "must be strictly ascending")


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    decimals: int = 6
    """Numbers are rounded to this many significant decimals before hashing."""
    abs_tolerance: float = 1e-6
    rel_tolerance: float = 1e-4
    task: Literal["auto", "classification", "regression"] = "auto"
    """Which quality metrics ground truth feeds; auto: classification when labels look like classes."""
    positive_label: str | None = None
    """Binary classification: the positive class (scores are its probability); None: `1` if seen, else the last label."""
    bootstrap_resamples: int = 1000
    """Paired bootstrap resamples behind every interval; 0 computes no intervals."""
    confidence: float = 0.95
    """Two-sided confidence of every interval."""
    seed: int = 20250301
    """Seed of the bootstrap, so a re-judged run gets the same intervals."""
    thresholds: tuple[float, ...] = (0.5,)
    """Decision thresholds on the score: records whose score crosses one are counted, by direction."""
    noise_quantile: float = 0.999
    """A score change within this quantile of |replayed - captured production| counts as replay noise (and
    1 - this is the share of an identical model's answers expected beyond it, which equivalence allows)."""
    psi_bins: int = 10
    """Quantile bins of the production scores for PSI."""
    top_changes: int = 20
    """How many of the most changed records the report lists with their inputs."""
    slices: tuple[SliceConfig, ...] = (SliceConfig(name="hour", by="hour"),)
    min_slice_support: int = 30
    """A slice with fewer records is listed but gets no statistics (and is never gated)."""
    # Automatic segments (analysis.segments): every input column or field and CustomAttributes key.
    auto_segments: bool = True
    """Also cut the records by every input column (CSV) or field (JSON) and every CustomAttributes key."""
    segment_bins: int = 10
    """Quantile bins of a numeric feature (deciles: a range of a tenth of the traffic is one segment)."""
    segment_top_values: int = 10
    """Most frequent values of a categorical feature kept as segments; the rest share `other`."""
    max_segment_features: int = 500
    """Features segmented at most (the first seen); wider inputs are reported as skipped."""
    segment_accuracy_margin: float | None = None
    """Classification: a segment whose accuracy is credibly more than this below production's is flagged
    (None: gate.policy.accuracy_margin, the margin the whole run is judged on)."""
    segment_mae_margin: float | None = None
    """Regression: a segment whose MAE is credibly more than this share above production's is flagged
    (None: gate.policy.mae_margin)."""
    segment_alpha: float = 0.05
    """False-discovery rate (Benjamini-Hochberg) over every segment tested."""

    def __post_init__(self):
        for key, value, low in (("segment_bins", self.segment_bins, 2), ("segment_top_values", self.segment_top_values, 1),
                                ("max_segment_features", self.max_segment_features, 0)):
            if value < low:
                raise ConfigError("<config>", f"compare.{key}", f"must be {low} or more")
        for key, value in (("segment_accuracy_margin", self.segment_accuracy_margin),
                           ("segment_mae_margin", self.segment_mae_margin), ("segment_alpha", self.segment_alpha)):
            if value is not None and not 0 <= value < 1:
                raise ConfigError("<config>", f"compare.{key}", "must be at least 0 and below 1")


@dataclasses.dataclass(frozen=True)
class GateCheck:
    metric: str
    """A metric name from analysis.gate.GATE_METRICS."""
    threshold: float
    direction: Literal["at_least", "at_most"] = "at_least"
    relative_to_production: bool = False
    """Judge candidate - production instead of the candidate's value."""
    severity: Severity = "critical"
    name: str | None = None
    judge_on: Literal["point", "interval"] = "point"
    """interval: the bound of the confidence interval must clear the threshold (lower for at_least, upper for
    at_most); a non-inferiority check is `relative_to_production` + `judge_on: interval` + threshold -margin."""
    slices: bool = False
    """Also judge every slice with enough support; a slice fails when it is credibly on the wrong side of the
    threshold after Holm's correction over the slices at gate.slice_alpha."""
    required: bool = False
    """critical: a metric that cannot be computed fails the run (exit 1) instead of making it Inconclusive."""


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    """The margins of the default policy (analysis.gate): what counts as no worse, equivalent, broken."""

    accuracy_margin: float = 0.01
    """Classification with labels: the lower bound of candidate - production accuracy must be >= -this."""
    recall_margin: float = 0.05
    """A minority class rejects when its recall credibly drops by more than this (Holm over the classes)."""
    minority_class_share: float = 0.2
    """A class under this share of the labelled records (and under half an even split) is a minority class."""
    mae_margin: float = 0.05
    """Regression with labels: the upper bound of candidate - production MAE must be <= this x production's MAE."""
    equivalence_margin: float = 0.01
    """Without labels: approved only when real_difference_rate's upper bound is <= this."""
    agreement_floor: float = 0.5
    """Without labels: label agreement whose upper bound is below this is broken (inverted labels) and rejects."""


@dataclasses.dataclass(frozen=True)
class GateConfig:
    min_records: int = 1
    """Fewer joined records than this is no evidence: Inconclusive, never Approved (at least 1)."""
    min_coverage: float = 0.99
    """The candidate must answer this share of the records put to it; the evaluation may lose 1 - this."""
    checks: tuple[GateCheck, ...] = ()
    slice_alpha: float = 0.05
    """Family-wise error rate of a slice check across its slices (Holm)."""
    policy: PolicyConfig = PolicyConfig()


@dataclasses.dataclass(frozen=True)
class RegistryConfig:
    kind: Literal["local", "sagemaker"] = "local"
    path: str = "registry.sqlite"
    """Local registry file, relative to the workspace."""
    group: str = "shadow-eval-demo"
    """Model package group the candidate belongs to."""


@dataclasses.dataclass(frozen=True)
class TablesConfig:
    database: str = "shadow_eval"
    """Glue database, or the schema name inside the local DuckDB file."""
    input_text: Literal["keep", "hash", "drop"] = "keep"
    """Captured inputs may hold personal data: keep them in shadow_records, keep only their sha256, or drop them."""


@dataclasses.dataclass(frozen=True)
class AwsSettings:
    region: str
    role_arn: str
    """Execution role of the Processing jobs and of the candidate Model (so of its transform jobs)."""
    output_s3_uri: str
    """s3://bucket/prefix: runs/<execution id>/..., tables/<table>/..., config/ live below it."""
    image_uri: str
    """Processing image with shadow-eval installed (`python -m steps.entrypoints ...` must run in it)."""
    pipeline_role_arn: str | None = None
    """Role SageMaker Pipelines assumes to start the jobs; None uses role_arn."""
    pipeline_name: str = "shadow-eval"
    candidate_package_arn: str = ""
    """Default of the CandidatePackageArn parameter; an EventBridge trigger passes the real one."""
    replay_groups: tuple[str, ...] = ()
    """Input formats to replay (one TransformStep each); empty takes capture.input_format."""
    processing_instance_type: str = "ml.m5.xlarge"
    transform_instance_type: str = "ml.m5.xlarge"
    transform_instance_count: int = 1
    """An int, not a parameter: SDK 3.27 rejects ParameterInteger for TransformResources.InstanceCount."""
    kms_key_id: str | None = None
    """Encrypts job volumes and outputs when set."""
    subnets: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()
    enable_network_isolation: bool = False
    """Applies to the candidate Model (and so to its transform containers)."""
    events_role_arn: str | None = None
    """Role EventBridge and EventBridge Scheduler assume to start the pipeline."""
    schedule_cron: str | None = None
    """Six-field EventBridge cron for a scheduled run, e.g. `0 3 * * ? *`; None: no schedule."""
    trigger_on_new_package: bool = True
    """Start a run when a package in registry.group is registered as PendingManualApproval."""
    athena_workgroup: str = "shadow-eval"
    model_role_arn: str | None = None
    """Role the candidate and production replay Models run under (the stack's ModelRole); None uses role_arn."""
    model_artifact_buckets: tuple[str, ...] = ()
    """Buckets holding candidate/production model artifacts (ModelDataUrl); the ModelRole may read only these."""
    model_image_repositories: tuple[str, ...] = ()
    """ECR repository ARNs of the models' inference images; the ModelRole may pull only these."""
    pending_packages: Literal["newest", "each"] = "newest"
    """A run started with no CandidatePackageArn (the schedule) evaluates the newest package still
    PendingManualApproval in registry.group, or starts one execution for each of them."""

    @property
    def bucket(self) -> str:
        return self.output_s3_uri[len("s3://"):].split("/", 1)[0]

    def uri(self, *parts: str) -> str:
        """An S3 URI below output_s3_uri."""
        return "/".join([self.output_s3_uri.rstrip("/"), *parts])


@dataclasses.dataclass(frozen=True)
class Config:
    workspace: str = ".shadow-eval"
    capture: CaptureConfig = CaptureConfig()
    production: ModelSide = ModelSide()
    candidate: ModelSide = ModelSide()
    replay: ReplayConfig = ReplayConfig()
    ground_truth: GroundTruthConfig = GroundTruthConfig()
    compare: CompareConfig = CompareConfig()
    gate: GateConfig = GateConfig()
    registry: RegistryConfig = RegistryConfig()
    tables: TablesConfig = TablesConfig()
    aws: AwsSettings | None = None
    """Only the SageMaker pipeline reads it: account, roles, S3, instances."""


_RANGES: dict[str, tuple[float, float]] = {
    "replay.max_payload_mb": (0, 100),
    "replay.max_concurrent_transforms": (1, 1000),
    "replay.invocation_timeout_s": (1, 3600),
    "replay.invocation_max_retries": (0, 3),
    "replay.noise_repeat_batches": (0, 1_000_000),
    "compare.decimals": (0, 15),
    "compare.abs_tolerance": (0, float("inf")),
    "compare.rel_tolerance": (0, float("inf")),
    "gate.min_records": (1, float("inf")),
    "gate.policy.accuracy_margin": (0, 1),
    "gate.policy.recall_margin": (0, 1),
    "gate.policy.minority_class_share": (0, 0.5),
    "gate.policy.mae_margin": (0, float("inf")),
    "gate.policy.equivalence_margin": (0, 1),
    "gate.policy.agreement_floor": (0, 1),
    "gate.min_coverage": (0, 1),
    "gate.slice_alpha": (1e-6, 0.5),
    "compare.bootstrap_resamples": (0, 100_000),
    "compare.confidence": (0.5, 0.9999),
    "compare.noise_quantile": (0.5, 1),
    "compare.psi_bins": (2, 100),
    "compare.top_changes": (0, 1000),
    "compare.min_slice_support": (1, float("inf")),
    "output.label_threshold": (0, 1),
    "compare.seed": (0, 2**32 - 1),
}
"""Inclusive ranges by dotted key (or its last parts); every number must also be finite (no NaN, no inf)."""
_S3_URI = re.compile(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?", re.DOTALL)
_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/\S+")
_CRON = re.compile(r"\S+( \S+){5}")
_NAMED = (("registry.group", "model package group"), ("tables.database", "database"),
          ("capture.endpoint", "endpoint"), ("capture.variant", "variant"))
"""Config values that become paths or SQL, and the rule (steps.names) each must fully match."""
# Metrics whose value can be below zero (the others are shares, counts, distances or errors).
_SIGNED_METRICS = {"mean_score_delta", "mean_score", "cohen_kappa"}


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML config file, apply dotted-key overrides (from the CLI), validate."""
    source = str(path)
    try:
        with safe_files.open_regular(path) as handle:  # a FIFO given as --config must not hang the run
            data = yaml.safe_load(handle.read().decode("utf-8")) or {}
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise ConfigError(source, "<file>", "no such file") from None
        raise ConfigError(source, "<file>", f"{exc.strerror}; give a readable YAML file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(source, "<file>", f"not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, "<file>", f"not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(source, "<root>", "expected a mapping of sections")
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(data, dotted, value)
    return config_from_mapping(data, source)


def config_from_mapping(data: dict[str, Any], source: str = "<config>") -> Config:
    """Validate a plain mapping (as YAML would give) into a Config."""
    config = _build(Config, data, "", source)
    if config.replay.max_concurrent_transforms and config.replay.max_payload_mb:
        if config.replay.max_concurrent_transforms * config.replay.max_payload_mb > 100:
            raise ConfigError(source, "replay.max_concurrent_transforms",
                              "max_concurrent_transforms x max_payload_mb must be <= 100, as in SageMaker")
    window = config.capture
    if window.window_start and window.window_end and window.window_start >= window.window_end:
        raise ConfigError(source, "capture.window_end", "must be after capture.window_start")
    for key, kind in _NAMED:
        section, field = key.split(".")
        value = getattr(getattr(config, section), field)
        if value is not None:
            try:
                names.check(kind, value)
            except names.InvalidName as exc:
                raise ConfigError(source, key, str(exc)) from None
    registry_path = Path(config.registry.path)
    if registry_path.is_absolute() or ".." in registry_path.parts:
        raise ConfigError(source, "registry.path", f"{config.registry.path!r} must be a path inside the workspace "
                          "(relative, without ..)")
    for i, check in enumerate(config.gate.checks):
        _check_gate_check(check, f"gate.checks[{i}]", source)
    if config.aws is not None:
        _check_aws(config.aws, config, source)
    return config


def to_mapping(config: Any) -> Any:
    """The config as plain data (for run records and reports)."""
    if dataclasses.is_dataclass(config):
        return {f.name: to_mapping(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, tuple):
        return [to_mapping(item) for item in config]
    if isinstance(config, dt.datetime):
        return config.isoformat().replace("+00:00", "Z")
    return config


def parse_utc(text: str) -> dt.datetime:
    """An ISO-8601 time; naive times are taken as UTC, as capture folders are."""
    value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


def _check_gate_check(check: GateCheck, key: str, source: str) -> None:
    """A check must name a metric compare produces, with a threshold that means something for it."""
    spec = GATE_METRICS.get(check.metric.split(":", 1)[0])  # class_recall:<label> is one class's recall
    if spec is None:
        raise ConfigError(source, f"{key}.metric", f"{check.metric!r} is not a metric compare produces "
                          f"(known: {', '.join(sorted(GATE_METRICS))})")
    if check.relative_to_production and spec.kind != "per_model":
        raise ConfigError(source, f"{key}.relative_to_production",
                          f"{check.metric} is not a per-model metric, so it has no candidate - production delta")
    if not check.relative_to_production and check.threshold < 0 and check.metric not in _SIGNED_METRICS:
        raise ConfigError(source, f"{key}.threshold", f"{check.threshold} is negative, which {check.metric} never is")
    if check.required and check.severity != "critical":
        raise ConfigError(source, f"{key}.required", "only a critical check can be required")


def _check_aws(settings: AwsSettings, config: Config, source: str) -> None:
    for key in ("output_s3_uri",):
        if not _S3_URI.fullmatch(getattr(settings, key)):
            raise ConfigError(source, f"aws.{key}", f"{getattr(settings, key)!r} is not an s3://bucket/prefix URI")
    for key in ("role_arn", "pipeline_role_arn", "events_role_arn", "model_role_arn"):
        value = getattr(settings, key)
        if value is not None and not _ROLE_ARN.fullmatch(value):
            raise ConfigError(source, f"aws.{key}", f"{value!r} is not an IAM role ARN")
    groups = ("csv", "jsonlines", "json", "binary")
    for group in settings.replay_groups:
        if group not in groups:
            raise ConfigError(source, "aws.replay_groups", f"{group!r} is not one of {', '.join(groups)}")
    if not settings.replay_groups and config.capture.input_format == "auto":
        raise ConfigError(source, "aws.replay_groups", "required when capture.input_format is auto: a pipeline "
                          "has one TransformStep per input format, fixed when it is built")
    if len(set(settings.replay_groups)) != len(settings.replay_groups):
        raise ConfigError(source, "aws.replay_groups", "lists a group twice")
    if settings.schedule_cron is not None and not _CRON.fullmatch(settings.schedule_cron):
        raise ConfigError(source, "aws.schedule_cron", "expected six fields, e.g. '0 3 * * ? *'")
    if not 1 <= settings.transform_instance_count <= 100:
        raise ConfigError(source, "aws.transform_instance_count", "must be 1 to 100, as in CreateTransformJob")
    if bool(settings.subnets) != bool(settings.security_group_ids):
        raise ConfigError(source, "aws.subnets", "subnets and security_group_ids go together")


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    data[leaf] = value


def _build(cls: type, data: Any, prefix: str, source: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(source, prefix or "<root>", f"expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(source, _join(prefix, unknown[0]),
                          f"unknown key (known: {', '.join(sorted(fields))})")
    values = {}
    for name, field in fields.items():
        key = _join(prefix, name)
        if name in data:
            values[name] = _coerce(hints[name], data[name], key, source)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(source, key, "required")
    return cls(**values)


def _coerce(hint: Any, value: Any, key: str, source: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, key, source)
    if origin is Literal:
        if value not in args:
            raise ConfigError(source, key, f"{value!r} is not one of {', '.join(map(str, args))}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(source, key, "expected a list")
        return tuple(_coerce(args[0], item, f"{key}[{i}]", source) for i, item in enumerate(value))
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key, source)
    if hint is dt.datetime:
        if isinstance(value, dt.datetime):
            return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
        try:
            return parse_utc(str(value))
        except ValueError:
            raise ConfigError(source, key, f"{value!r} is not an ISO-8601 time") from None
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, key, f"expected true or false, got {value!r}")
        return value
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (hint is int and not isinstance(value, int)):
            raise ConfigError(source, key, f"expected {'an integer' if hint is int else 'a number'}, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(source, key, f"{value!r} is not a finite number")
        _check_range(key, value, source)
        return hint(value)
    if hint is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(source, key, f"expected a non-empty string, got {value!r}")
        return value
    raise ConfigError(source, key, f"unsupported type {hint}")


def _check_range(key: str, value: float, source: str) -> None:
    if not math.isfinite(value):
        raise ConfigError(source, key, f"{value} is not a finite number")
    for suffix, (low, high) in _RANGES.items():
        if key == suffix or key.endswith("." + suffix):
            if not low <= value <= high:
                raise ConfigError(source, key, f"{value} is outside [{low}, {high}]")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
