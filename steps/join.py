"""Join stage: production's captured answers, the replayed answers and ground truth, record by record.

Reads `<run_dir>/prepare/` and `<run_dir>/replay/`, writes `join/records/<n>.parquet` (the
shadow_records schema plus run_id) and `join/quarantine/<n>.parquet`, one part per captured
records part. Memory is bounded by one capture file: each part and the .out files it points
at are read alone. Duplicates across the window and ground truth are resolved out of core
with DuckDB.
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import io
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.canonical import values_match
from analysis.ground_truth import GroundTruthError, ground_truth_records
from analysis.outputs import OutputParseError, ParsedOutput, non_finite, outputs_match, parse_body, parse_output, \
    parse_value, split_document
from analysis.quarantine import REASONS, replay_failure_code
from analysis.records import request_records
from analysis.results import Accounting
from steps import safe_files
from steps.backends.catalog import SCHEMAS
from steps.config import Config, OutputParsing

log = logging.getLogger(__name__)

RECORDS_SCHEMA = pa.schema([pa.field("run_id", pa.string()), *SCHEMAS["shadow_records"]])
QUARANTINE_SCHEMA = pa.schema([pa.field("run_id", pa.string()), *SCHEMAS["shadow_quarantine"]])
_GROUP_BY_EXTENSION = {".csv": "csv", ".jsonl": "jsonlines", ".json": "json", ".bin": "binary"}
# Keys Batch Transform adds to a joined JSON record (the last two only with GenerateInferenceId).
_JOIN_KEYS = {"SageMakerOutput", "SageMakerInferenceId", "SageMakerInferenceTime"}
DUCKDB_MEMORY_LIMIT = "256MB"
_TRUTH_SCHEMA = pa.schema([("key", pa.string()), ("record_index", pa.int32()), ("label", pa.string()),
                           ("seq", pa.int64())])


@dataclasses.dataclass(frozen=True)
class GroundTruthCounts:
    """Ground truth that did not become a label on a joined record (not captured records, so not quarantine)."""

    labels: int = 0
    """Labels read (one per record of each ground-truth call)."""
    matched: int = 0
    """Labels attached to a joined record."""
    unknown: int = 0
    """Labels for an (id, record_index) that no captured record has."""
    duplicates: int = 0
    """Labels sent again for the same (id, record_index); the last one read wins."""
    invalid: int = 0
    """Ground-truth lines that did not parse."""


@dataclasses.dataclass(frozen=True)
class JoinResult:
    """Where every captured record ended, and where the join wrote its parts."""

    run_id: str
    accounting: Accounting
    records_dir: Path
    quarantine_dir: Path
    prepare_quarantine_dir: Path
    ground_truth: GroundTruthCounts
    noise_floor: bool
    """Whether production was replayed too (production_replay_* columns filled)."""


@dataclasses.dataclass(frozen=True)
class _Problem:
    reason: str
    detail: str


Answer = ParsedOutput | _Problem


def run(config: Config, run_dir: str | Path) -> JoinResult:
    """Join one run folder's prepared records with the replay outputs and ground truth."""
    run_dir = Path(run_dir)
    run_id = run_dir.name
    out = run_dir / "join"
    for folder in ("records", "quarantine"):
        if (out / folder).exists():
            shutil.rmtree(out / folder)  # a re-run rewrites every part; stale parts must not linger
        (out / folder).mkdir(parents=True)
    parts = parquet_parts(run_dir / "prepare" / "records")
    plan = json.loads((run_dir / "prepare" / "replay-plan.json").read_text(encoding="utf-8"))["groups"]
    candidate = _Side(run_dir, "candidate", plan, config.candidate.output, config)
    production = _Side(run_dir, "production", plan, config.production.output, config)
    already_quarantined, prepare_reasons = _prepare_quarantine(run_dir / "prepare" / "quarantine")
    reasons = collections.Counter(prepare_reasons)
    joined = skipped = read = 0
    with tempfile.TemporaryDirectory(dir=out, prefix=".tmp-") as scratch, duckdb.connect() as db:
        db.execute(f"SET temp_directory = '{_sql_text(scratch)}'").fetchall()
        # DuckDB's default limit is 80% of RAM, so it holds the whole window's duplicate scan in memory;
        # a fixed limit makes it spill to scratch instead and keeps the join's peak flat in the window size.
        db.execute(f"SET memory_limit = '{DUCKDB_MEMORY_LIMIT}'").fetchall()
        duplicates = _window_duplicates(db, parts)
        truth = load_ground_truth(db, config, Path(scratch), parts)
        matched = 0
        for part in parts:
            rows = pq.read_table(part).to_pylist()
            read += len(rows)
            kept = [row for row in rows if _place(row) not in already_quarantined]
            skipped += len(rows) - len(kept)
            labels = truth_labels(db, kept) if truth.labels else [None] * len(kept)
            matched_rows, quarantined = _join_part(kept, labels, duplicates, candidate, production, config, run_id)
            matched += sum(1 for row in matched_rows if row["ground_truth_label"] is not None)
            reasons.update(row["reason"] for row in quarantined)
            joined += len(matched_rows)
            pq.write_table(pa.Table.from_pylist(matched_rows, schema=RECORDS_SCHEMA), out / "records" / part.name)
            pq.write_table(pa.Table.from_pylist(quarantined, schema=QUARANTINE_SCHEMA), out / "quarantine" / part.name)
    if skipped:
        log.warning("join: %d records in prepare/records are also in prepare/quarantine; counted once, as quarantined",
                    skipped)
    quarantined_total = sum(reasons.values())
    # Counted from the inputs, not from the outputs, so that `balanced` checks the join lost nothing.
    captured = read - skipped + sum(prepare_reasons.values())
    accounting = Accounting(captured=captured, joined=joined, quarantined=quarantined_total,
                            by_reason=dict(sorted(reasons.items())))
    if not accounting.balanced:
        raise RuntimeError(f"join lost records: {accounting}")
    counts = dataclasses.replace(truth, matched=matched)
    (out / "summary.json").write_text(json.dumps({
        "captured": accounting.captured, "joined": joined, "quarantined": quarantined_total,
        "by_reason": accounting.by_reason, "ground_truth": dataclasses.asdict(counts),
        "input_text": config.tables.input_text}, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if counts.unknown or counts.duplicates or counts.invalid:
        log.warning("join: ground truth has %d labels for records not captured in the window, %d sent again for "
                    "the same record (the last read wins) and %d lines that do not parse", counts.unknown,
                    counts.duplicates, counts.invalid)
    log.info("join: %d captured = %d joined + %d quarantined %s; ground truth %s",
             accounting.captured, joined, quarantined_total, accounting.by_reason, counts)
    return JoinResult(run_id=run_id, accounting=accounting, records_dir=out / "records",
                      quarantine_dir=out / "quarantine", prepare_quarantine_dir=run_dir / "prepare" / "quarantine",
                      ground_truth=counts, noise_floor=production.present)


def load_joined(run_dir: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """The joined records of a run (join/records/*.parquet) as one frame, in part order."""
    parts = parquet_parts(Path(run_dir) / "join" / "records")
    schema = RECORDS_SCHEMA if columns is None else pa.schema([RECORDS_SCHEMA.field(name) for name in columns])
    tables = [pq.read_table(part, columns=schema.names) for part in parts]
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    return table.to_pandas()


class _Side:
    """One side's replay outputs (candidate, or production again), mapped back to records as the plan says."""

    def __init__(self, run_dir: Path, side: str, plan: dict[str, Any], parsing: OutputParsing, config: Config):
        self.root = run_dir / "replay" / side
        self.side, self.plan, self.parsing = side, plan, parsing
        self.decimals = config.compare.decimals
        self.instances_path = config.capture.instances_path
        summary = run_dir / "replay" / f"{side}.json"
        self.present = summary.exists() or self.root.exists()
        failed = _failed_files(json.loads(summary.read_text(encoding="utf-8"))) if summary.exists() else []
        self.failed = {str(item["file"]): f"{item.get('reason', 'failed')}: {item.get('detail', '')}".rstrip(": ")
                       for item in failed}
        self._outs: dict[str, list[str] | _Problem | bytes] = {}

    def answers(self, rows: list[dict[str, Any]]) -> list[Answer]:
        """Each row's answer from this side's replay, or why there is none."""
        self._outs, self._documents = {}, {}  # one part at a time: memory stays bounded by one capture file
        # A replay file holds one capture file's records, so its last line is among this part's rows.
        self._records = collections.Counter()
        for row in rows:
            if row.get("replay_file") and row.get("replay_line"):
                self._records[row["replay_file"]] = max(self._records[row["replay_file"]], row["replay_line"])
        return [self._answer(row) for row in rows]

    def _answer(self, row: dict[str, Any]) -> Answer:
        replay_file = row.get("replay_file")
        if not replay_file:
            return _Problem("replay_output_missing", "prepare wrote this record to no replay file")
        group, out_path = self._locate(replay_file)
        failure = self._failure(replay_file, group)
        if failure is not None:
            # Whose loss it is follows the transformer's reason (the text before the colon).
            return _Problem(replay_failure_code(failure.split(":", 1)[0]),
                            f"{self.side} transform of {replay_file} failed ({failure})")
        if not out_path.exists():  # the output is not where the join looks: the evaluation's loss
            return _Problem("replay_output_missing", f"{self.side} wrote no {out_path.relative_to(self.root)}")
        try:
            if group == "binary":
                return self._binary(out_path, row)
            lines = self._lines(out_path)
            if isinstance(lines, _Problem):
                return lines
            answer = self._joined(lines, row, group, out_path.name)
            if isinstance(answer, _Problem) and group in ("csv", "jsonlines"):
                records = self._batch_documents(out_path, self._records[replay_file])
                if records is not None:
                    return parse_value(records[row["replay_line"] - 1], self.parsing, self.decimals)
            return answer
        except OutputParseError as exc:
            return _Problem("unparsable_candidate_output", f"{self.side} answer: {exc.detail}")

    def _joined(self, lines: list[str], row: dict[str, Any], group: str, name: str) -> Answer:
        """The row's answer from its own line of a joined .out (JoinSource=Input, one line per record)."""
        line_number = row["replay_line"]
        if not line_number or line_number > len(lines):
            return _Problem("replay_output_mismatch",
                            f"{name} has {len(lines)} lines, the record is on replay line {line_number}")
        if group == "csv":
            return self._csv(lines, row, name)
        return self._json(lines[line_number - 1], row, group, name)

    def _batch_documents(self, path: Path, records: int) -> list[object] | None:
        """The .out read as one JSON document per mini-batch, as Batch Transform writes a batch answered whole
        (AssembleWith=Line, no join): their records at records_path, in order, when they are one per record."""
        key = str(path)
        if key not in self._documents:
            try:
                values = _json_values(path.read_text(encoding="utf-8"))
            except UnicodeDecodeError:
                values = None
            if values is not None and any(isinstance(v, dict) and "SageMakerOutput" in v for v in values):
                values = None  # a joined .out: its own lines are the answers, and their problem is real
            self._documents[key] = None if values is None else \
                [record for value in values for record in split_document(value, self.parsing)]
        found = self._documents[key]
        return found if found is not None and records and len(found) == records else None

    def _locate(self, replay_file: str) -> tuple[str, Path]:
        first = replay_file.split("/", 1)[0]
        if first in self.plan:
            return first, self.root / f"{replay_file}.out"
        group = _GROUP_BY_EXTENSION.get(Path(replay_file).suffix, "binary")
        return group, self.root / group / f"{replay_file}.out"

    def _failure(self, replay_file: str, group: str) -> str | None:
        inner = replay_file.split("/", 1)[1] if replay_file.startswith(f"{group}/") else replay_file
        for name in (replay_file, inner, f"{group}/{replay_file}"):
            if name in self.failed:
                return self.failed[name]
        return None

    def _lines(self, path: Path) -> list[str] | _Problem:
        key = str(path)
        if key not in self._outs:
            try:
                text = path.read_text(encoding="utf-8")
                lines = text.split("\n")
                if lines and lines[-1] == "":
                    lines.pop()
                self._outs[key] = [line[:-1] if line.endswith("\r") else line for line in lines]
            except UnicodeDecodeError as exc:
                self._outs[key] = _Problem("replay_output_mismatch", f"{path.name} is not UTF-8 (byte {exc.start})")
        return self._outs[key]  # type: ignore[return-value]

    def _csv(self, lines: list[str], row: dict[str, Any], name: str) -> Answer:
        # Column 0 carries record_id through InputFilter $[1:] and JoinSource=Input; the input fields follow.
        line = lines[row["replay_line"] - 1]
        # A JSON answer (object or array) appended to the echoed row as is: not CSV fields, but its own answer.
        verbatim = _after_prefix(line, f"{_csv_text([row['record_id']])},{row['input_text']},")
        value = _json_object(verbatim) if verbatim is not None else None
        if value is not None:
            return parse_value(self._one_record(value), self.parsing, self.decimals)
        fields = _csv_row(line)
        inputs = _csv_row(row["input_text"])
        if fields is None or inputs is None or not fields or fields[0] != row["record_id"]:
            return _Problem("replay_output_mismatch",
                            f"{name} line {row['replay_line']} does not start with record id {row['record_id']}")
        if fields[1:1 + len(inputs)] != inputs:
            return _Problem("replay_output_mismatch",
                            f"{name} line {row['replay_line']} does not echo the record's input")
        answer = fields[1 + len(inputs):]
        if not answer:
            return _Problem("replay_output_mismatch", f"{name} line {row['replay_line']} has no output after the input")
        # One field holding a JSON object or array: a model answering JSON, joined as one CSV field.
        value = _json_object(answer[0]) if len(answer) == 1 else None
        if value is not None:
            return parse_value(self._one_record(value), self.parsing, self.decimals)
        return parse_output(_csv_text(answer), self.parsing, self._accept("csv"), self.decimals, fmt="csv")

    def _one_record(self, value: object) -> object:
        """A record's answer that is a document listing exactly one record (a batch of one answered whole)."""
        if isinstance(value, dict):
            records = split_document(value, self.parsing)
            if len(records) == 1 and records[0] is not value:
                return records[0]
        return value

    def _json(self, line: str, row: dict[str, Any], group: str, name: str) -> Answer:
        where = f"{name} line {row['replay_line']}"
        try:
            joined = json.loads(line)
            replayed = json.loads(row["input_text"])
        except json.JSONDecodeError as exc:
            return _Problem("replay_output_mismatch", f"{where} is not JSON: {exc.msg}")
        if not isinstance(joined, dict) or "SageMakerOutput" not in joined:
            return _Problem("replay_output_mismatch", f"{where} has no SageMakerOutput (is JoinSource=Input set?)")
        echo = joined["SageMakerInput"] if "SageMakerInput" in joined else \
            {key: value for key, value in joined.items() if key not in _JOIN_KEYS}
        output = joined["SageMakerOutput"]
        if group == "jsonlines":
            if not _same_json(echo, replayed):
                return _Problem("replay_output_mismatch", f"{where} echoes a different input than the replayed line")
            return parse_value(self._one_record(output), self.parsing, self.decimals)
        requests = request_records(echo, self.instances_path)
        index = row["replay_index"] or 0
        if index >= len(requests) or not _same_json(requests[index], replayed):
            return _Problem("replay_output_mismatch", f"{where} echoes a request without this record at index {index}")
        answers = split_document(output, self.parsing)
        if len(answers) != len(requests):
            return _Problem("candidate_count_mismatch",
                            f"{where}: {len(answers)} answers for {len(requests)} records in the request")
        return parse_value(answers[index], self.parsing, self.decimals)

    def _binary(self, path: Path, row: dict[str, Any]) -> Answer:
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise OutputParseError(f"{path.name} is not UTF-8 text (byte {exc.start})") from None
        accept = self._accept("binary")
        # One request is one record: a one-record answer is taken apart, anything else is the record's answer.
        try:
            answers = parse_body(text, self.parsing, accept, self.decimals)
        except OutputParseError:
            answers = []
        if len(answers) == 1:
            return answers[0]
        return parse_output(text, self.parsing, accept, self.decimals)

    def _accept(self, group: str) -> str | None:
        return (self.plan.get(group) or {}).get("accept")


def _failed_files(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """files_failed of replay/<side>.json: one transform result, or one per plan group (as the runner writes)."""
    if "files_failed" in summary:
        return list(summary["files_failed"])
    return [item for result in summary.values() if isinstance(result, dict)
            for item in result.get("files_failed", [])]


def _join_part(rows: list[dict[str, Any]], labels: list[str | None], duplicates: dict[tuple, str],
               candidate: _Side, production: _Side, config: Config, run_id: str) -> tuple[list[dict], list[dict]]:
    candidate_answers = candidate.answers(rows)
    replay_answers = production.answers(rows) if production.present else [None] * len(rows)
    joined, quarantined = [], []
    for row, label, answer, replayed in zip(rows, labels, candidate_answers, replay_answers):
        first = duplicates.get(_place(row))
        if first is not None:
            quarantined.append(_quarantine_row(row, "duplicate_event_id", f"already captured at {first}", run_id))
            continue
        captured = _production_answer(row, config)
        answer = _readable(_finite(answer, "candidate_invalid_score", "candidate"), captured)
        for problem in (captured, answer):
            if isinstance(problem, _Problem):
                quarantined.append(_quarantine_row(row, problem.reason, problem.detail, run_id))
                break
        else:
            joined.append(_record_row(row, captured, answer, replayed, label, config, run_id))
    return joined, quarantined


def _production_answer(row: dict[str, Any], config: Config) -> Answer:
    if row.get("output_text") is None:
        return _Problem("unparsable_production_output", "the capture holds no answer for this record")
    try:
        parsed = parse_output(row["output_text"], config.production.output, row.get("output_content_type"),
                              config.compare.decimals)
    except OutputParseError as exc:
        return _Problem("unparsable_production_output", exc.detail)
    return _finite(parsed, "production_invalid_score", "production's captured answer")


def _finite(answer: Answer, code: str, whose: str) -> Answer:
    """The answer, or a problem when its score or label is NaN or infinite (never a silently missing score)."""
    if isinstance(answer, _Problem):
        return answer
    why = non_finite(answer)
    return answer if why is None else _Problem(code, f"{whose}: {why} (raw {answer.raw[:80]!r})")


def _readable(answer: Answer, production: Answer) -> Answer:
    """The candidate's answer, or a problem when it has neither score nor label where production's has one:
    an answer the comparison cannot read (`not-a-number`) must not pass as a record with nothing to compare."""
    if isinstance(answer, _Problem) or isinstance(production, _Problem):
        return answer
    if answer.score is None and answer.label is None and (production.score is not None or production.label):
        return _Problem("candidate_invalid_score", f"candidate: no score or label in {answer.raw[:80]!r} where "
                                                   f"production's answer has one")
    return answer


def _record_row(row: dict[str, Any], production: ParsedOutput, candidate: ParsedOutput, replayed: Answer | None,
                label: str | None, config: Config, run_id: str) -> dict[str, Any]:
    if replayed is not None:
        # The noise floor is the tool's own reference: a record without a usable one is still judged.
        replayed = _finite(replayed, "production_invalid_score", "replayed production")
    if isinstance(replayed, _Problem):
        log.debug("no noise-floor answer for %s: %s", row["record_id"], replayed.detail)
        replayed = None
    labels_known = production.label is not None and candidate.label is not None
    return {
        "run_id": run_id,
        **{key: row[key] for key in ("record_id", "event_id", "record_index", "inference_id", "inference_time",
                                     "custom_attributes", "endpoint", "variant", "capture_file", "capture_line")},
        "input_text": stored_input_text(row["input_text"], config.tables.input_text),
        "production_raw": production.raw, "candidate_raw": candidate.raw,
        "production_replay_raw": replayed.raw if replayed else None,
        "production_score": production.score, "candidate_score": candidate.score,
        "production_replay_score": replayed.score if replayed else None,
        "production_label": production.label, "candidate_label": candidate.label,
        "production_replay_label": replayed.label if replayed else None,
        "production_hash": production.hash, "candidate_hash": candidate.hash,
        "exact_match": production.hash == candidate.hash,
        "tolerant_match": outputs_match(production, candidate, config.compare),
        "label_match": production.label == candidate.label if labels_known else None,
        "score_abs_diff": _abs_diff(production.score, candidate.score),
        "noise_abs_diff": _abs_diff(production.score, replayed.score if replayed else None),
        "ground_truth_label": label,
    }


def stored_input_text(text: str | None, policy: str) -> str | None:
    """What shadow_records keeps of a captured input (tables.input_text): it, `sha256:<hex>` of it, or nothing."""
    if text is None or policy == "drop":
        return None
    if policy == "hash":
        return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
    return text


def _quarantine_row(row: dict[str, Any], code: str, detail: str, run_id: str) -> dict[str, Any]:
    reason = REASONS[code]
    return {"run_id": run_id, "record_id": row["record_id"], "event_id": row["event_id"],
            "capture_file": row["capture_file"], "capture_line": row["capture_line"], "stage": reason.stage,
            "reason": code, "detail": f"{detail}; {reason.fix}"}


def _window_duplicates(db: duckdb.DuckDBPyConnection, parts: list[Path]) -> dict[tuple, str]:
    """Every repeat of an event_id + record_index: (record_id, capture_file, capture_line) -> where it was first."""
    if not parts:
        return {}
    rows = db.execute(f"""
        SELECT record_id, capture_file, capture_line, first_file, first_line FROM (
            SELECT record_id, capture_file, capture_line,
                   first_value(capture_file) OVER w AS first_file, first_value(capture_line) OVER w AS first_line,
                   row_number() OVER w AS seen
            FROM read_parquet({_sql_list(parts)})
            WINDOW w AS (PARTITION BY event_id, record_index ORDER BY capture_file, capture_line))
        WHERE seen > 1""").fetchall()
    return {(record_id, file, line): f"{first_file} line {first_line}"
            for record_id, file, line, first_file, first_line in rows}


def load_ground_truth(db: duckdb.DuckDBPyConnection, config: Config, scratch: Path,
                       parts: list[Path]) -> GroundTruthCounts:
    """Read every *.jsonl under ground_truth.root into DuckDB table `truth` (key, record_index, label)."""
    if not config.ground_truth.root:
        return GroundTruthCounts()
    root = Path(config.ground_truth.root)
    if not root.is_dir():
        raise FileNotFoundError(f"ground_truth.root {root} is not a folder")
    staged = scratch / "ground-truth.parquet"
    invalid = 0
    with pq.ParquetWriter(staged, _TRUTH_SCHEMA) as writer:
        seq = 0
        for path, problem in safe_files.walk_files(root, ".jsonl"):
            if problem is not None:  # a FIFO would hang, a folder named x.jsonl would fail: skip, and say so
                log.warning("ground truth %s: %s", path, problem)
                continue
            with safe_files.open_regular(path) as handle:
                text = handle.read().decode("utf-8", errors="replace")
            batch: dict[str, list] = {name: [] for name in _TRUTH_SCHEMA.names}
            for line, parsed in ground_truth_records(text, config.ground_truth):
                if isinstance(parsed, GroundTruthError):
                    invalid += 1
                    log.warning("ground truth %s line %d: %s", path.relative_to(root), line, parsed)
                    continue
                for index, label in enumerate(parsed.labels):
                    for name, value in zip(_TRUTH_SCHEMA.names, (parsed.key, index, label, seq)):
                        batch[name].append(value)
                    seq += 1
            writer.write_table(pa.Table.from_pydict(batch, schema=_TRUTH_SCHEMA))
    db.execute(f"""CREATE TABLE truth AS
        SELECT key, record_index, arg_max(label, seq) AS label, count(*) AS copies
        FROM read_parquet('{_sql_text(staged)}') GROUP BY key, record_index""").fetchall()
    labels, duplicates = db.execute(
        "SELECT coalesce(sum(copies), 0), coalesce(sum(copies - 1), 0) FROM truth").fetchall()[0]
    unknown = 0
    if parts:
        (unknown,) = db.execute(f"""SELECT count(*) FROM truth t WHERE NOT EXISTS (
            SELECT 1 FROM read_parquet({_sql_list(parts)}) r
            WHERE coalesce(r.inference_id, r.event_id) = t.key AND r.record_index = t.record_index)""").fetchall()[0]
    return GroundTruthCounts(labels=int(labels), unknown=int(unknown), duplicates=int(duplicates), invalid=invalid)


def truth_labels(db: duckdb.DuckDBPyConnection, rows: list[dict[str, Any]]) -> list[str | None]:
    """Each row's ground-truth label: on inference_id when the call had one, else event_id; then record_index."""
    if not rows:
        return []
    keys = pa.table({"position": list(range(len(rows))),
                     "key": [row["inference_id"] or row["event_id"] for row in rows],
                     "record_index": pa.array([row["record_index"] for row in rows], pa.int32())})
    db.register("part_keys", keys)
    try:
        found = db.execute("""SELECT p.position, t.label FROM part_keys p
            JOIN truth t ON t.key = p.key AND t.record_index = p.record_index""").fetchall()
    finally:
        db.unregister("part_keys")
    labels: list[str | None] = [None] * len(rows)
    for position, label in found:
        labels[position] = label
    return labels


def _prepare_quarantine(folder: Path) -> tuple[set[tuple], collections.Counter]:
    places, reasons = set(), collections.Counter()
    for part in parquet_parts(folder):
        for row in pq.read_table(part, columns=["record_id", "capture_file", "capture_line", "reason"]).to_pylist():
            places.add((row["record_id"], row["capture_file"], row["capture_line"]))
            reasons[row["reason"]] += 1
    return places, reasons


def parquet_parts(folder: Path) -> list[Path]:
    """The numbered parts of a folder in number order."""
    files = folder.glob("*.parquet") if folder.is_dir() else []
    return sorted(files, key=lambda path: (int(path.stem) if path.stem.isdigit() else float("inf"), path.name))


def _place(row: dict[str, Any]) -> tuple:
    return row["record_id"], row["capture_file"], row["capture_line"]


def _csv_row(text: str) -> list[str] | None:
    try:
        rows = list(csv.reader([text], strict=True))
    except csv.Error:
        return None
    return rows[0] if len(rows) == 1 else None


def _csv_text(fields: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(fields)
    return buffer.getvalue()


def _json_values(text: str) -> list[object] | None:
    """Every JSON value in a text of whitespace-separated JSON values (documents, JSON Lines), else None."""
    decoder, values, position = json.JSONDecoder(), [], 0
    while True:
        while position < len(text) and text[position] in " \t\r\n":
            position += 1
        if position == len(text):
            return values
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            return None
        values.append(value)


def _json_object(text: str) -> object | None:
    """A JSON object or array held in one CSV field, else None."""
    if text.lstrip()[:1] not in ("{", "["):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _after_prefix(line: str, prefix: str) -> str | None:
    return line[len(prefix):] if line.startswith(prefix) and len(line) > len(prefix) else None


def _same_json(a: object, b: object) -> bool:
    # Batch Transform re-serialises joined JSON (sorted keys, compact); numbers keep their digits.
    return values_match(a, b, abs_tol=0.0, rel_tol=0.0)


def _abs_diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else abs(b - a)


def _sql_text(path: str | Path) -> str:
    return str(path).replace("'", "''")


def _sql_list(paths: list[Path]) -> str:
    return "[" + ", ".join(f"'{_sql_text(path)}'" for path in paths) + "]"
