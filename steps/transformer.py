"""A local Batch Transform: the same knobs as CreateTransformJob, against any container's HTTP contract.

Every file under the input folder (recursively, in sorted order) becomes `<output>/<same path>.out`.
Records keep their order within a file. Up to MaxConcurrentTransforms requests are in flight at
once, across mini-batches and files, and responses are reassembled in order. A failed invocation
(non-200, timeout, connection error) is retried up to InvocationsMaxRetries times; a file with a
record that still fails gets no `.out` at all and is reported with a reason, as in SageMaker.
Work is checkpointed per file: a `.out` is only ever written complete (temporary name, then an atomic
rename), followed by `X.out.input-sha256`, the digest of the input it answers. Resuming skips a file
only when both exist and the digest matches the input as it is now; a `.out` without its digest
(interrupted between the two writes, or left by hand) or for another input is done again.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import http.client
import json
import logging
import os
import threading
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import urlsplit

from analysis.dataprocessing import (
    FAILURES as RECORD_FAILURES, DataProcessing, DataProcessingError, FilePlan, MiniBatch, TransformSettings,
    assemble_output, plan_requests,
)

log = logging.getLogger("shadow_eval.transformer")

# Why a file got no .out: the invocation failures below, plus analysis.dataprocessing.FAILURES.
INVOCATION_FAILURES: dict[str, str] = {
    "http_<status>": "the container answered with a non-200 status on every attempt",
    "timeout": "the container did not answer within InvocationsTimeoutInSeconds on every attempt",
    "connection_error": "the container could not be reached on every attempt",
    "truncated_response": "the container's answer ended before its Content-Length on every attempt",
    "unreadable_input": "the input file could not be read",
}
FAILURE_REASONS = {**INVOCATION_FAILURES, **RECORD_FAILURES}

DEFAULT_MAX_PAYLOAD_MB = 6
DEFAULT_MAX_CONCURRENT_TRANSFORMS = 1
# Not published for SageMaker; third-party serving stacks default to MULTI_RECORD (2025).
DEFAULT_BATCH_STRATEGY = "MultiRecord"
PING_TIMEOUT_S = 2.0
_CONTAINER_STRATEGIES = {"MULTI_RECORD": "MultiRecord", "SINGLE_RECORD": "SingleRecord"}


class TransformJobError(ValueError):
    """Knobs CreateTransformJob would reject, or a container that never became healthy."""


class InvocationError(RuntimeError):
    """An invocation that failed on every attempt."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclasses.dataclass(frozen=True)
class TransformJob:
    """The CreateTransformJob knobs the local transformer honours (None: container, then default)."""

    content_type: str | None = None
    accept: str | None = None
    split_type: Literal["None", "Line"] = "None"
    batch_strategy: Literal["SingleRecord", "MultiRecord"] | None = None
    max_payload_mb: int | None = None
    max_concurrent_transforms: int | None = None
    assemble_with: Literal["None", "Line"] = "None"
    data_processing: dict[str, str] | None = None
    invocation_timeout_s: float = 600
    """ModelClientConfig.InvocationsTimeoutInSeconds; fractions are allowed locally."""
    invocation_max_retries: int = 3
    environment: dict[str, str] = dataclasses.field(default_factory=dict)
    slice_end_inclusive: bool = False
    """Read `[start:end]` in the filters with an inclusive end, as the DataProcessing guide's examples do."""
    records_path: str | None = None
    """Not a CreateTransformJob knob: where the model's one-document answer to a batch lists its records
    (the side's output.records_path), so a join can take it record by record (analysis.dataprocessing)."""

    def __post_init__(self) -> None:
        if not 0 <= self.invocation_max_retries <= 3:
            raise TransformJobError(f"InvocationsMaxRetries {self.invocation_max_retries} is outside [0, 3]")
        if not 0 < self.invocation_timeout_s <= 3600:
            raise TransformJobError(f"InvocationsTimeoutInSeconds {self.invocation_timeout_s} is outside (0, 3600]")
        if self.max_concurrent_transforms is not None and self.max_concurrent_transforms < 0:
            raise TransformJobError(f"MaxConcurrentTransforms {self.max_concurrent_transforms} is negative")
        if self.max_concurrent_transforms and self.max_payload_mb:
            if self.max_concurrent_transforms * self.max_payload_mb > 100:
                raise TransformJobError("MaxConcurrentTransforms x MaxPayloadInMB must be <= 100")
        if len(self.environment) > 16:
            raise TransformJobError(f"Environment has {len(self.environment)} entries; at most 16 are allowed")
        self.settings(DEFAULT_BATCH_STRATEGY, self.max_payload_mb or 0)  # checks the rest of the knobs

    def settings(self, batch_strategy: str, max_payload_mb: int) -> TransformSettings:
        """The per-file knobs once the execution parameters are resolved."""
        try:
            processing = DataProcessing.from_mapping(self.data_processing, slice_end_inclusive=self.slice_end_inclusive)
            return TransformSettings(self.content_type, self.accept, self.split_type, batch_strategy,
                                     max_payload_mb, self.assemble_with, processing, self.records_path)
        except DataProcessingError as exc:
            raise TransformJobError(exc.detail) from None

    def container_environment(self) -> dict[str, str]:
        """What SageMaker puts in a batch container's environment for this job."""
        env = {"SAGEMAKER_BATCH": "true", **self.environment}
        if self.max_payload_mb is not None:
            env["SAGEMAKER_MAX_PAYLOAD_IN_MB"] = str(self.max_payload_mb)
        if self.batch_strategy is not None:
            env["SAGEMAKER_BATCH_STRATEGY"] = {v: k for k, v in _CONTAINER_STRATEGIES.items()}[self.batch_strategy]
        if self.max_concurrent_transforms:
            env["SAGEMAKER_MAX_CONCURRENT_TRANSFORMS"] = str(self.max_concurrent_transforms)
        return env


@dataclasses.dataclass(frozen=True)
class ExecutionParameters:
    """The values used: the request's, else the container's /execution-parameters, else the defaults."""

    max_concurrent_transforms: int
    batch_strategy: str
    max_payload_mb: int

    def to_json(self) -> dict[str, Any]:
        return {"MaxConcurrentTransforms": self.max_concurrent_transforms,
                "BatchStrategy": self.batch_strategy, "MaxPayloadInMB": self.max_payload_mb}


def resolve_execution_parameters(job: TransformJob, container: dict[str, Any]) -> ExecutionParameters:
    """Precedence as documented: request > container > service default."""
    def from_container(key: str, valid) -> Any:
        value = container.get(key)
        if value is None:
            return None
        if not valid(value):
            log.warning("ignoring /execution-parameters %s=%r", key, value)
            return None
        return value

    concurrency = job.max_concurrent_transforms or from_container(
        "MaxConcurrentTransforms", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1)
    strategy = job.batch_strategy or _CONTAINER_STRATEGIES.get(
        from_container("BatchStrategy", lambda v: v in _CONTAINER_STRATEGIES) or "")
    payload = job.max_payload_mb if job.max_payload_mb is not None else from_container(
        "MaxPayloadInMB", lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 100)
    return ExecutionParameters(concurrency or DEFAULT_MAX_CONCURRENT_TRANSFORMS, strategy or DEFAULT_BATCH_STRATEGY,
                               DEFAULT_MAX_PAYLOAD_MB if payload is None else payload)


@dataclasses.dataclass(frozen=True)
class FileFailure:
    file: str
    reason: str
    detail: str


@dataclasses.dataclass(frozen=True)
class TransformResult:
    """What a transform did; `to_json` is the replay/<side>.json shape in docs/internals.md."""

    files_ok: tuple[str, ...]
    """Input paths (relative, POSIX) that have a complete .out, including ones kept from a previous run."""
    files_failed: tuple[FileFailure, ...]
    invocations: int
    """HTTP requests to /invocations, retries included."""
    retries: int
    seconds: float
    execution_parameters: dict[str, Any]
    side: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"side": self.side, "files_ok": list(self.files_ok),
                "files_failed": [dataclasses.asdict(f) for f in self.files_failed],
                "invocations": self.invocations, "retries": self.retries, "seconds": round(self.seconds, 3),
                "execution_parameters": self.execution_parameters}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TransformResult:
        return cls(tuple(data["files_ok"]), tuple(FileFailure(**f) for f in data["files_failed"]),
                   data["invocations"], data["retries"], data["seconds"], data["execution_parameters"],
                   data.get("side", ""))


def transform(input_dir: str | Path, output_dir: str | Path, endpoint_url: str, job: TransformJob,
              resume: bool = True, *, ping_timeout_s: float = 240.0, producer: str = "",
              on_invocation: Callable[[Invocation], None] | None = None) -> TransformResult:
    """Run `job` over every file under input_dir against the container at endpoint_url.

    `producer` names what answers (the model's digest); it is kept in each checkpoint beside the input
    digest, so a resume never takes another model's answers for this one's. on_invocation, when given,
    is called (from the invoking threads) once per mini-batch sent.
    """
    started = time.monotonic()
    input_dir, output_dir = Path(input_dir).resolve(), Path(output_dir).resolve()
    if output_dir == input_dir or output_dir.is_relative_to(input_dir):
        raise TransformJobError(f"the output folder {output_dir} is inside the input folder; it would be read as input")
    files = list_input_files(input_dir)
    container = Container(endpoint_url, job.invocation_timeout_s)
    container.wait_until_healthy(ping_timeout_s)
    parameters = resolve_execution_parameters(job, container.execution_parameters())
    settings = job.settings(parameters.batch_strategy, parameters.max_payload_mb)
    invoker = _Invoker(container, job, settings, on_invocation)
    done, failed = [], []
    with concurrent.futures.ThreadPoolExecutor(parameters.max_concurrent_transforms,
                                               thread_name_prefix="invoke") as pool:
        pending: collections.deque[_FileWork] = collections.deque()
        backlog_limit = max(8 * parameters.max_concurrent_transforms, 64)
        for relative in files:
            out = output_dir / f"{relative}.out"
            try:
                data = (input_dir / relative).read_bytes()
            except OSError as exc:
                failed.append(_fail(relative, out, *_reason(exc)))
                continue
            digest = hashlib.sha256(data).hexdigest() + (f" {producer}" if producer else "")
            if resume and _checkpointed(out, digest):
                log.debug("%s: .out exists for this input, skipped", relative)
                done.append(relative)
                continue
            try:
                plan = plan_requests(data, settings)
            except DataProcessingError as exc:
                failed.append(_fail(relative, out, *_reason(exc)))
                continue
            futures = [pool.submit(invoker.invoke, relative, batch) for batch in plan.batches]
            pending.append(_FileWork(relative, out, plan, futures, digest))
            while pending and (pending[0].ready() or sum(len(w.futures) for w in pending) > backlog_limit):
                _finish(pending.popleft(), settings, done, failed)
        while pending:
            _finish(pending.popleft(), settings, done, failed)
    result = TransformResult(tuple(sorted(done)), tuple(sorted(failed, key=lambda f: f.file)), invoker.invocations,
                             invoker.retries, time.monotonic() - started, parameters.to_json())
    log.info("transform of %s: %d files ok, %d failed, %d invocations (%d retries) in %.1f s",
             input_dir, len(result.files_ok), len(result.files_failed), result.invocations, result.retries,
             result.seconds)
    return result


def list_input_files(input_dir: Path) -> list[str]:
    """Every file under input_dir as a POSIX path relative to it, sorted."""
    if not input_dir.is_dir():
        raise TransformJobError(f"{input_dir}: no such input folder")
    return sorted(path.relative_to(input_dir).as_posix() for path in input_dir.rglob("*") if path.is_file())


class Container:
    """The HTTP contract of a SageMaker inference container at a base URL."""

    def __init__(self, url: str, timeout_s: float):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TransformJobError(f"{url!r} is not an http(s) URL")
        self.url, self.timeout_s = url, timeout_s
        self._connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self._host, self._port = parts.hostname, parts.port
        self._base = parts.path.rstrip("/")

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                timeout_s: float | None = None) -> tuple[int, bytes]:
        connection = self._connection_class(self._host, self._port, timeout=timeout_s or self.timeout_s)
        try:
            connection.request(method, self._base + path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def wait_until_healthy(self, timeout_s: float) -> None:
        """Poll GET /ping (2 s per ping, as SageMaker) until it answers 200."""
        deadline, last = time.monotonic() + timeout_s, "no answer"
        while True:
            try:
                status, _ = self.request("GET", "/ping", timeout_s=PING_TIMEOUT_S)
                if status == 200:
                    return
                last = f"HTTP {status}"
            except (OSError, http.client.HTTPException) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise TransformJobError(f"{self.url}/ping did not answer 200 within {timeout_s:g} s (last: {last})")
            time.sleep(0.1)

    def execution_parameters(self) -> dict[str, Any]:
        """The optional GET /execution-parameters answer; {} when the container does not implement it."""
        try:
            status, body = self.request("GET", "/execution-parameters", timeout_s=PING_TIMEOUT_S)
            answer = json.loads(body) if status == 200 else {}
        except (OSError, http.client.HTTPException, ValueError):
            answer = {}
        return answer if isinstance(answer, dict) else {}


@dataclasses.dataclass(frozen=True)
class Invocation:
    """One mini-batch sent to /invocations, with its retries: what steps.invocations stores per call."""

    file: str
    first_record: int
    """Index in the file of the batch's first record: with `file`, it names the batch on both sides."""
    records: int
    payload_bytes: int
    attempts: tuple[tuple[float, str], ...]
    """(wall seconds, outcome) of each attempt: "ok", or a reason of INVOCATION_FAILURES (http_<status>, ...)."""
    started_at: float
    """time.time() when the first attempt began."""
    response_bytes: int | None = None


class _Invoker:
    """POST /invocations with retries; counts requests across threads."""

    def __init__(self, container: Container, job: TransformJob, settings: TransformSettings,
                 on_invocation: Callable[[Invocation], None] | None = None):
        self.container, self.max_retries = container, job.invocation_max_retries
        self.on_invocation = on_invocation
        self.headers = {key: value for key, value in (("Content-Type", settings.content_type),
                                                      ("Accept", settings.accept)) if value}
        self.invocations = self.retries = 0
        self._lock = threading.Lock()

    def invoke(self, relative: str, batch: MiniBatch) -> bytes:
        where = f"records {batch.first + 1}-{batch.first + batch.count}"
        attempts: list[tuple[float, str]] = []  # for on_invocation: (seconds, outcome) per attempt
        started_at = time.time()
        for attempt in range(self.max_retries + 1):
            with self._lock:
                self.invocations += 1
                self.retries += attempt > 0
            began = time.perf_counter()
            try:
                status, body = self.container.request("POST", "/invocations", batch.body, self.headers)
                if status == 200:
                    attempts.append((time.perf_counter() - began, "ok"))
                    self._observed(relative, batch, attempts, started_at, len(body))
                    return body
                failure = (f"http_{status}", f"{where}: HTTP {status}: {body[:300].decode('utf-8', 'replace').strip()}")
            except TimeoutError:
                failure = ("timeout", f"{where}: no answer within {self.container.timeout_s:g} s")
            except http.client.IncompleteRead as exc:
                failure = ("truncated_response", f"{where}: the answer stopped after {len(exc.partial)} bytes, "
                                                 f"{exc.expected} more were announced")
            except (OSError, http.client.HTTPException) as exc:
                failure = ("connection_error", f"{where}: {type(exc).__name__}: {exc}")
            attempts.append((time.perf_counter() - began, failure[0]))
            # The detail (kept in the result) may quote the container's answer; the log names only the failure.
            log.warning("%s: %s: attempt %d of %d failed: %s", relative, where, attempt + 1, self.max_retries + 1,
                        failure[0])
            if attempt < self.max_retries:
                time.sleep(min(0.05 * 2 ** attempt, 1.0))
        self._observed(relative, batch, attempts, started_at, None)
        raise InvocationError(*failure)

    def _observed(self, relative: str, batch: MiniBatch, attempts: list[tuple[float, str]], started_at: float,
                  response_bytes: int | None) -> None:
        if self.on_invocation is not None:
            self.on_invocation(Invocation(relative, batch.first, batch.count, len(batch.body), tuple(attempts),
                                          started_at, response_bytes))


@dataclasses.dataclass
class _FileWork:
    relative: str
    out: Path
    plan: FilePlan
    futures: list[concurrent.futures.Future]
    digest: str
    """sha256 of the input file, written beside the .out as its checkpoint."""

    def ready(self) -> bool:
        return all(future.done() for future in self.futures)


def _finish(work: _FileWork, settings: TransformSettings, done: list[str], failed: list[FileFailure]) -> None:
    """Wait for a file's responses in order and write its .out, or record why it has none."""
    try:
        responses = [future.result() for future in work.futures]
        data = assemble_output(work.plan, responses, settings)
        _write_atomically(work.out, data)
        _write_atomically(checkpoint_path(work.out), work.digest.encode("ascii"))
    except (InvocationError, DataProcessingError, OSError) as exc:
        for future in work.futures:
            future.cancel()  # the file has failed; do not spend calls on the rest of it
        failed.append(_fail(work.relative, work.out, *_reason(exc)))
        return
    done.append(work.relative)


def _reason(exc: Exception) -> tuple[str, str]:
    if isinstance(exc, (InvocationError, DataProcessingError)):
        return exc.reason, exc.detail
    return "unreadable_input", f"{type(exc).__name__}: {exc}"


def _fail(relative: str, out: Path, reason: str, detail: str) -> FileFailure:
    # A .out left by an earlier run would be mistaken for this run's answer.
    out.unlink(missing_ok=True)
    checkpoint_path(out).unlink(missing_ok=True)
    log.error("%s failed (%s); the detail is in the transform result", relative, reason)
    return FileFailure(relative, reason, detail)


def checkpoint_path(out: Path) -> Path:
    """Where the digest of the input a .out answers is kept."""
    return out.with_name(out.name + ".input-sha256")


def _checkpointed(out: Path, digest: str) -> bool:
    """Whether out is a complete answer to the input with this digest; a stale .out is removed."""
    marker = checkpoint_path(out)
    if out.exists() and marker.exists() and marker.read_text(encoding="ascii").strip() == digest:
        return True
    if out.exists():
        log.info("%s: no checkpoint for the current input; transforming it again", out.name)
        out.unlink()
    marker.unlink(missing_ok=True)
    return False


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
