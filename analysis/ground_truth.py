"""Parse Model Monitor ground-truth records into a join key and per-record labels.

A record is `{"groundTruthData": {"data", "encoding"}, "eventMetadata": {"eventId"}, "eventVersion": "0"}`
where eventId is the capture's inferenceId when the call had one, else its eventId. `data`
holds the labels of every record of the call, split like the request: CSV lines, or a JSON
document (`{"instances": [{"label": 0}, ...]}`, `{"label": 1}`).
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator
from typing import Literal, Protocol

import jmespath

from analysis.canonical import label_text, number_from_text
from analysis.records import SplitError, document_records, split_body

# Distinct labels kept per source; past this the vocabularies are too wide to call disjoint.
VOCABULARY_LIMIT = 1000
# Integer ground truth with at most this many distinct values is class labels (as analysis.compare decides).
MAX_CLASSES = 20
_SHOWN = 6

Problem = Literal["malformed_json", "not_ground_truth_record", "unknown_event_version", "unknown_encoding",
                  "unsplittable_labels", "missing_label"]


class GroundTruthSpec(Protocol):
    """What this module reads of steps.config.GroundTruthConfig."""

    @property
    def records_path(self) -> str: ...
    @property
    def label_path(self) -> str: ...


class GroundTruthError(ValueError):
    """A ground-truth record that cannot be used, with a problem code and a readable detail."""

    def __init__(self, problem: Problem, detail: str):
        super().__init__(f"{problem}: {detail}")
        self.problem, self.detail = problem, detail


@dataclasses.dataclass(frozen=True)
class GroundTruth:
    """The labels sent for one call: `labels[i]` belongs to record_index i."""

    key: str
    labels: tuple[str, ...]


def parse_ground_truth_line(line: str, spec: GroundTruthSpec) -> GroundTruth:
    """One JSON Lines ground-truth line; raises GroundTruthError."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise GroundTruthError("malformed_json", f"not valid JSON: {exc.msg} at column {exc.colno}") from None
    return parse_ground_truth_record(record, spec)


def parse_ground_truth_record(record: object, spec: GroundTruthSpec) -> GroundTruth:
    """One parsed ground-truth object; raises GroundTruthError."""
    data = record.get("groundTruthData") if isinstance(record, dict) else None
    metadata = record.get("eventMetadata") if isinstance(record, dict) else None
    key = metadata.get("eventId") if isinstance(metadata, dict) else None
    if not isinstance(data, dict) or not isinstance(key, str) or not key or not isinstance(data.get("data"), str):
        raise GroundTruthError("not_ground_truth_record",
                               "expected groundTruthData.data (a string) and eventMetadata.eventId")
    version = record.get("eventVersion", "0")
    if version != "0":
        raise GroundTruthError("unknown_event_version", f"eventVersion is {version!r}, not \"0\"")
    encoding = data.get("encoding")
    if encoding == "CSV":
        return GroundTruth(key, _csv_labels(data["data"]))
    if encoding == "JSON":
        return GroundTruth(key, _json_labels(data["data"], spec))
    raise GroundTruthError("unknown_encoding", f"groundTruthData.encoding is {encoding!r}, not CSV or JSON")


def ground_truth_records(text: str, spec: GroundTruthSpec) -> Iterator[tuple[int, GroundTruth | GroundTruthError]]:
    """(1-based line, record or error) for a JSON Lines file, or a file holding one JSON array."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            yield exc.lineno, GroundTruthError("malformed_json", f"not a valid JSON array: {exc.msg}")
            return
        for record in records:
            yield 1, _attempt(lambda: parse_ground_truth_record(record, spec))
        return
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield number, _attempt(lambda: parse_ground_truth_line(line, spec))


def _attempt(parse) -> GroundTruth | GroundTruthError:
    try:
        return parse()
    except GroundTruthError as exc:
        return exc


def _csv_labels(data: str) -> tuple[str, ...]:
    try:
        lines = split_body(data, "csv")
    except SplitError as exc:
        raise GroundTruthError("unsplittable_labels", exc.detail) from None
    labels = []
    for line in lines:
        label = label_text(line)
        if not label:
            raise GroundTruthError("missing_label", "a CSV ground-truth line is empty")
        labels.append(label)
    return tuple(labels)


def _json_labels(data: str, spec: GroundTruthSpec) -> tuple[str, ...]:
    try:
        document = json.loads(data)
    except json.JSONDecodeError as exc:
        raise GroundTruthError("unsplittable_labels", f"JSON ground truth does not parse: {exc.msg}") from None
    labels = []
    for index, item in enumerate(document_records(document, spec.records_path)):
        value = jmespath.search(spec.label_path, item) if isinstance(item, (dict, list)) else item
        label = label_text(value)
        if label is None:
            raise GroundTruthError("missing_label", f"record {index} has no label at {spec.label_path!r}")
        labels.append(label)
    return tuple(labels)


@dataclasses.dataclass
class LabelVocabularies:
    """The distinct labels of ground truth and of each model, gathered part by part (labels as label_text spells
    them, so 1, 1.0, "1", "1.0" and true are all "1")."""

    truth: set[str] = dataclasses.field(default_factory=set)
    production: set[str] = dataclasses.field(default_factory=set)
    candidate: set[str] = dataclasses.field(default_factory=set)

    def add(self, truth: Iterable[str | None], production: Iterable[str | None],
            candidate: Iterable[str | None]) -> None:
        for seen, labels in ((self.truth, truth), (self.production, production), (self.candidate, candidate)):
            if len(seen) <= VOCABULARY_LIMIT:
                seen.update(label for label in labels if label is not None)

    def mismatch(self, task: str = "auto") -> str | None:
        """Why ground truth cannot be scored against the models' labels, or None.

        Ground truth that shares no value with either model's labels would score both models 0 and
        judge nothing. Only class-like truth is checked: numeric truth with many or fractional values is a
        regression target, and a vocabulary past VOCABULARY_LIMIT is not known in full.
        """
        sides = (self.truth, self.production, self.candidate)
        if task == "regression" or not self.truth or not (self.production or self.candidate):
            return None
        if any(len(seen) > VOCABULARY_LIMIT for seen in sides) or not _class_like(self.truth):
            return None
        if self.truth & (self.production | self.candidate):
            return None
        numeric = all(number_from_text(label) is not None for label in self.truth)
        return (f"ground-truth labels {_listing(self.truth)} share no value with the models' labels "
                f"(production {_listing(self.production)}, candidate {_listing(self.candidate)}): set "
                f"ground_truth.label_path (or records_path) to the field holding the label, or send ground truth "
                f"in the models' label values (numbers compare by value: 1, 1.0, \"1\" and true are the same)"
                + ("; if they are regression targets, set compare.task: regression" if numeric else ""))


def _class_like(labels: set[str]) -> bool:
    numbers = [number_from_text(label) for label in labels]
    if any(number is None for number in numbers):
        return True
    return len(labels) <= MAX_CLASSES and all(float(number).is_integer() for number in numbers)


def _listing(labels: set[str]) -> str:
    if not labels:
        return "{} (none)"
    shown = sorted(labels)[:_SHOWN]
    more = f", ... ({len(labels)} in all)" if len(labels) > _SHOWN else ""
    return "{" + ", ".join(shown) + more + "}"
