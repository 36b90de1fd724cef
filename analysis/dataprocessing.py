"""What Batch Transform does to a file's bytes around the model call, without doing any I/O.

One input file goes through: split into records (SplitType) -> InputFilter on each record ->
mini-batches (BatchStrategy, MaxPayloadInMB) -> [model] -> the response split back into one
output per record when a join or OutputFilter needs it -> JoinSource=Input -> OutputFilter ->
assembled into the `.out` bytes (AssembleWith). `plan_requests` and `assemble_output` are the two
halves; the transformer makes the HTTP calls in between.

Behaviour that rests on observation rather than AWS text (reference/sagemaker-formats.md, 2025):
re-serialised JSON is compact with keys sorted at every level and numeric literals kept as
written; a multi-record response is split by lines, and a count mismatch fails the file.

What SageMaker does with a multi-record answer that is not one line per record is undocumented
(reference §2.4). A model may answer a batch with one JSON document listing one record per input
(`{"predictions": [...]}`, at the side's records_path): when a join or OutputFilter needs
per-record outputs, such a document is split into its records here, as if the model had answered
them line by line (AssembleWith=Line). A CSV join appends a JSON record as one field (an object)
or as its elements (an array), so the joined row stays one RFC 4180 row.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from analysis.jsonpath import JsonPath, JsonPathError, compile_path
from analysis.records import detect_format, document_records, media_type

SplitType = Literal["None", "Line"]
BatchStrategy = Literal["SingleRecord", "MultiRecord"]
AssembleWith = Literal["None", "Line"]
JoinSource = Literal["None", "Input"]
RecordFormat = Literal["csv", "json"]

MEGABYTE = 1024 * 1024
IDENTITY = compile_path("$")

FAILURES: dict[str, str] = {
    "invalid_job": "the transform knobs are a combination CreateTransformJob rejects",
    "record_too_large": "one record is larger than MaxPayloadInMB",
    "input_filter_failed": "a record could not be parsed or the InputFilter did not match it",
    "output_count_mismatch": "a multi-record response does not have one output per record",
    "output_unparsable": "the model's output for a record could not be parsed for the join or OutputFilter",
    "output_filter_failed": "the OutputFilter did not match the (joined) record",
}


class DataProcessingError(ValueError):
    """A file the transform cannot process, with a code from FAILURES and a readable detail."""

    def __init__(self, reason: str, detail: str):
        assert reason in FAILURES, reason
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclasses.dataclass(frozen=True)
class DataProcessing:
    """The DataProcessing block of CreateTransformJob, compiled."""

    input_filter: JsonPath = IDENTITY
    join_source: JoinSource = "None"
    output_filter: JsonPath = IDENTITY

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None, *, slice_end_inclusive: bool = False) -> DataProcessing:
        """From the API's shape: {"InputFilter": "$", "JoinSource": "None", "OutputFilter": "$"}."""
        mapping = dict(mapping or {})
        unknown = sorted(set(mapping) - {"InputFilter", "JoinSource", "OutputFilter"})
        if unknown:
            raise DataProcessingError("invalid_job", f"DataProcessing has an unknown key {unknown[0]!r} "
                                      "(known: InputFilter, JoinSource, OutputFilter)")
        join_source = mapping.get("JoinSource") or "None"
        if join_source not in ("None", "Input"):
            raise DataProcessingError("invalid_job", f"JoinSource {join_source!r} is not None or Input")
        try:
            return cls(compile_path(mapping.get("InputFilter") or "$", slice_end_inclusive=slice_end_inclusive),
                       join_source,
                       compile_path(mapping.get("OutputFilter") or "$", slice_end_inclusive=slice_end_inclusive))
        except JsonPathError as exc:
            raise DataProcessingError("invalid_job", str(exc)) from None

    @property
    def needs_record_outputs(self) -> bool:
        """Whether each record's output must be cut out of the response (join or OutputFilter)."""
        return self.join_source == "Input" or not self.output_filter.is_identity


@dataclasses.dataclass(frozen=True)
class TransformSettings:
    """The knobs that shape a file's requests and its `.out`, after execution-parameter precedence."""

    content_type: str | None = None
    accept: str | None = None
    split_type: SplitType = "None"
    batch_strategy: BatchStrategy = "MultiRecord"
    max_payload_mb: int = 6
    assemble_with: AssembleWith = "None"
    data_processing: DataProcessing = DataProcessing()
    records_path: str | None = None
    """Not a CreateTransformJob field: where a one-document answer to a batch lists its records (JMESPath)."""

    def __post_init__(self) -> None:
        if self.split_type not in ("None", "Line"):
            raise DataProcessingError("invalid_job", f"SplitType {self.split_type!r} is not supported locally "
                                      "(None or Line; RecordIO and TFRecord need SageMaker)")
        if self.batch_strategy not in ("SingleRecord", "MultiRecord"):
            raise DataProcessingError("invalid_job", f"BatchStrategy {self.batch_strategy!r} is not "
                                      "SingleRecord or MultiRecord")
        if self.assemble_with not in ("None", "Line"):
            raise DataProcessingError("invalid_job", f"AssembleWith {self.assemble_with!r} is not None or Line")
        if not 0 <= self.max_payload_mb <= 100:
            raise DataProcessingError("invalid_job", f"MaxPayloadInMB {self.max_payload_mb} is outside [0, 100]")
        processing = self.data_processing
        if not processing.input_filter.is_identity and self.input_format is None:
            raise DataProcessingError("invalid_job", f"InputFilter needs a CSV or JSON ContentType, "
                                      f"not {self.content_type!r}")
        if processing.join_source == "Input":
            if media_type(self.content_type) != media_type(self.accept):
                raise DataProcessingError("invalid_job", f"JoinSource=Input needs ContentType == Accept "
                                          f"({self.content_type!r} != {self.accept!r})")
            if self.split_type != self.assemble_with:
                raise DataProcessingError("invalid_job", f"JoinSource=Input needs SplitType == AssembleWith "
                                          f"({self.split_type} != {self.assemble_with})")
            if self.input_format is None or (self.input_format == "csv" and self.split_type != "Line"):
                raise DataProcessingError("invalid_job", "JoinSource=Input needs CSV (SplitType=Line) or JSON input")
        if not processing.output_filter.is_identity and self.output_format is None:
            raise DataProcessingError("invalid_job", f"OutputFilter needs a CSV or JSON Accept, not {self.accept!r}")

    @property
    def input_format(self) -> RecordFormat | None:
        return _record_format(self.content_type)

    @property
    def output_format(self) -> RecordFormat | None:
        """The format of the records the OutputFilter sees: the input's when joined, else Accept's."""
        if self.data_processing.join_source == "Input":
            return self.input_format
        return _record_format(self.accept)


@dataclasses.dataclass(frozen=True)
class MiniBatch:
    """One request: records [first, first + count) of the file, and the body sent for them."""

    first: int
    count: int
    body: bytes


@dataclasses.dataclass(frozen=True)
class FilePlan:
    """A file split into its original records and the requests that carry them."""

    records: tuple[bytes, ...]
    batches: tuple[MiniBatch, ...]


def plan_requests(data: bytes, settings: TransformSettings) -> FilePlan:
    """Split a file, filter each record, and pack the records into requests."""
    records = split_records(data, settings.split_type)
    path, fmt = settings.data_processing.input_filter, settings.input_format
    filtered = records if path.is_identity else [filter_input(r, path, fmt, i) for i, r in enumerate(records)]
    batches = mini_batches(filtered, settings.split_type, settings.batch_strategy, settings.max_payload_mb)
    return FilePlan(tuple(records), tuple(batches))


def assemble_output(plan: FilePlan, responses: Sequence[bytes], settings: TransformSettings) -> bytes:
    """The `.out` bytes from each request's response body, in order."""
    if not settings.data_processing.needs_record_outputs:
        return assemble(list(responses), settings.assemble_with)
    outputs = []
    for batch, body in zip(plan.batches, responses, strict=True):
        per_record = split_response(body, batch.count, settings.output_format, batch.first, settings.records_path)
        for offset, output in enumerate(per_record):
            index = batch.first + offset
            outputs.append(finish_record(plan.records[index], output, settings, index))
    return assemble(outputs, settings.assemble_with)


def split_records(data: bytes, split_type: SplitType) -> list[bytes]:
    """Records of a file: its lines (without terminators) for Line, the whole file for None."""
    if split_type == "None":
        return [data]
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def mini_batches(records: Sequence[bytes], split_type: SplitType, batch_strategy: BatchStrategy,
                 max_payload_mb: int) -> list[MiniBatch]:
    """Pack records into request bodies of at most MaxPayloadInMB (0 = unbounded), in order."""
    limit = max_payload_mb * MEGABYTE or None
    terminator = b"\n" if split_type == "Line" else b""
    batches: list[MiniBatch] = []
    pending: list[bytes] = []
    size = first = 0
    for index, record in enumerate(records):
        unit = record + terminator
        if limit is not None and len(unit) > limit:
            raise DataProcessingError("record_too_large", f"record {index + 1} is {len(unit)} bytes, more than "
                                      f"MaxPayloadInMB={max_payload_mb} ({limit} bytes)")
        full = limit is not None and size + len(unit) > limit
        if pending and (batch_strategy == "SingleRecord" or split_type == "None" or full):
            batches.append(MiniBatch(first, len(pending), b"".join(pending)))
            pending, size, first = [], 0, index
        pending.append(unit)
        size += len(unit)
    if pending:
        batches.append(MiniBatch(first, len(pending), b"".join(pending)))
    return batches


def filter_input(record: bytes, path: JsonPath, fmt: RecordFormat | None, index: int = 0) -> bytes:
    """Apply the InputFilter to one record; CSV rows are JSON arrays of their fields."""
    if path.is_identity:
        return record
    value = _parse_record(record, fmt, "input_filter_failed", f"input record {index + 1}")
    try:
        selected = path.apply(value)
    except JsonPathError as exc:
        raise DataProcessingError("input_filter_failed", f"input record {index + 1}: {exc}") from None
    return _serialise(selected, fmt)


def split_response(body: bytes, count: int, fmt: RecordFormat | None, first: int = 0,
                   records_path: str | None = None) -> list[bytes]:
    """One output per record of a batch: the lines of the response (one JSON record may span lines), or
    the records of one JSON document answering the whole batch (at records_path, or a bare list)."""
    text = body[:-1] if body.endswith(b"\n") else body
    text = text[:-1] if text.endswith(b"\r") else text
    document = _one_json_value(text)
    if count == 1 and (fmt == "json" or document is not _NOT_JSON):
        return [text]
    if count > 1 and document is not _NOT_JSON:
        records = document_records(document, records_path)
        if len(records) == count:
            return [dump_json(record).encode("utf-8") for record in records]
        raise DataProcessingError("output_count_mismatch", f"the response for records {first + 1}-{first + count} "
                                  f"is one JSON document with {len(records)} records (records_path "
                                  f"{records_path!r}) for {count} records")
    lines = split_records(body, "Line") if body else []
    if len(lines) != count:
        raise DataProcessingError("output_count_mismatch", f"the response for records {first + 1}-{first + count} "
                                  f"has {len(lines)} lines for {count} records")
    return lines


_NOT_JSON = object()


def _one_json_value(text: bytes) -> Any:
    """The body parsed as one JSON value (numbers keep their literals), else _NOT_JSON."""
    try:
        return parse_json(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return _NOT_JSON


def finish_record(input_record: bytes, output_record: bytes, settings: TransformSettings, index: int = 0) -> bytes:
    """One record's `.out` entry: joined with its original input if asked, then the OutputFilter."""
    processing, fmt = settings.data_processing, settings.output_format
    what = f"output of record {index + 1}"
    output = _parse_output_record(output_record, fmt, what)
    if processing.join_source == "Input":
        original = _parse_record(input_record, fmt, "output_unparsable", f"input record {index + 1}")
        output = join_input(original, output, fmt)
    try:
        selected = processing.output_filter.apply(output)
    except JsonPathError as exc:
        raise DataProcessingError("output_filter_failed", f"{what}: {exc}") from None
    return _serialise(selected, fmt)


def join_input(original: Any, output: Any, fmt: RecordFormat) -> Any:
    """JoinSource=Input: CSV appends the output fields; JSON adds SageMakerOutput (wrapping non-objects)."""
    if fmt == "csv":
        return list(original) + (list(output) if isinstance(output, list) else [output])
    if isinstance(original, dict):
        # An input key named SageMakerOutput is overwritten, as documented.
        return {**original, "SageMakerOutput": output}
    return {"SageMakerInput": original, "SageMakerOutput": output}


def assemble(outputs: Sequence[bytes], assemble_with: AssembleWith) -> bytes:
    """Line: each output then one newline (a trailing one is not doubled); None: concatenated bytes."""
    if assemble_with == "None":
        return b"".join(outputs)
    return b"".join((item[:-1] if item.endswith(b"\n") else item) + b"\n" for item in outputs)


class JsonNumber(float):
    """A JSON number that remembers its literal, so re-serialising keeps it digit for digit."""

    literal: str

    def __new__(cls, literal: str) -> JsonNumber:
        number = super().__new__(cls, literal)
        number.literal = literal
        return number


def parse_json(text: str | bytes) -> Any:
    """Parse JSON keeping each non-integer number's literal text."""
    return json.loads(text, parse_float=JsonNumber)


def dump_json(value: Any) -> str:
    """Compact JSON, keys sorted at every level, numbers as they were written."""
    if isinstance(value, dict):
        items = (json.dumps(str(k), ensure_ascii=False) + ":" + dump_json(value[k]) for k in sorted(value, key=str))
        return "{" + ",".join(items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(dump_json(item) for item in value) + "]"
    if isinstance(value, JsonNumber):
        return value.literal
    return json.dumps(value, ensure_ascii=False)


def parse_csv_row(text: str) -> list[str]:
    """The fields of one RFC 4180 CSV row."""
    return next(csv.reader([text]), [])


def write_csv_row(fields: Sequence[Any]) -> str:
    """One RFC 4180 CSV row, quoted only where needed, without a terminator."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow([_csv_field(field) for field in fields])
    return buffer.getvalue()


def _record_format(content_type: str | None) -> RecordFormat | None:
    fmt = detect_format(content_type)
    if fmt == "csv":
        return "csv"
    if fmt in ("json", "jsonlines"):
        return "json"
    return None


def _parse_record(record: bytes, fmt: RecordFormat | None, reason: str, what: str) -> Any:
    try:
        text = record.decode("utf-8")
    except UnicodeDecodeError:
        raise DataProcessingError(reason, f"{what} is not UTF-8 text") from None
    if fmt == "csv":
        return parse_csv_row(text)
    try:
        return parse_json(text)
    except json.JSONDecodeError as exc:
        raise DataProcessingError(reason, f"{what} is not valid JSON: {exc.msg} at column {exc.colno}") from None


def _parse_output_record(record: bytes, fmt: RecordFormat | None, what: str) -> Any:
    """A model's output for one record; in a CSV job a JSON object or array answer is kept as JSON."""
    if fmt == "csv" and record.lstrip()[:1] in (b"{", b"["):
        value = _one_json_value(record)
        if value is not _NOT_JSON:
            return value
    return _parse_record(record, fmt, "output_unparsable", what)


def _serialise(value: Any, fmt: RecordFormat | None) -> bytes:
    if fmt == "csv":
        return write_csv_row(value if isinstance(value, list) else [value]).encode("utf-8")
    return dump_json(value).encode("utf-8")


def _csv_field(value: Any) -> str:
    if isinstance(value, str):
        return value
    return dump_json(value)
