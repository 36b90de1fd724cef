"""Why a captured record could not be used: one declared list of reasons, each with its owner.

Every captured record ends joined or quarantined with one of these codes. Each code says
which stage raises it, whose fault the loss is, and what the user can do about it; a test
proves each has a case.

Owners (OWNERS): `capture` (bad captured data: excluded from the candidate's coverage and
reported), `candidate` (it failed to answer well: counts against it), `evaluation` (the tool
lost the record itself: the run cannot decide, so it is Inconclusive, never Rejected).
"""
from __future__ import annotations

import dataclasses
from typing import Literal

Owner = Literal["capture", "candidate", "evaluation"]
OWNERS: tuple[Owner, ...] = ("capture", "candidate", "evaluation")


@dataclasses.dataclass(frozen=True)
class Reason:
    stage: str
    meaning: str
    fix: str
    owner: Owner



REASONS: dict[str, Reason] = {
    # capture: the line itself (bad captured data: excluded, reported)
    "malformed_json": Reason("capture", "the capture line is not valid JSON",
                             "check the file was not edited or cut; SageMaker writes one JSON object per line",
                             "capture"),
    "truncated_line": Reason("capture", "the last line of the file is cut off",
                             "the object may still be uploading; re-run after SageMaker finishes the file", "capture"),
    "not_utf8": Reason("capture", "the line is not UTF-8 text",
                       "capture files are UTF-8 JSON Lines; the file may be binary or re-encoded", "capture"),
    "not_capture_record": Reason("capture", "the JSON object lacks captureData or eventMetadata.eventId",
                                 "only SageMaker data-capture records belong under the capture root", "capture"),
    "unknown_event_version": Reason("capture", "eventVersion is not \"0\"",
                                    "a newer capture format; update shadow-eval", "capture"),
    "unknown_encoding": Reason("capture", "encoding is not CSV, JSON or BASE64",
                               "the capture was written by something other than SageMaker", "capture"),
    "invalid_base64": Reason("capture", "BASE64 data does not decode",
                             "the payload was corrupted; nothing to replay", "capture"),
    "missing_input": Reason("capture", "the record has no endpointInput",
                            "enable CaptureMode Input on the endpoint's DataCaptureConfig", "capture"),
    "missing_output": Reason("capture", "the record has no endpointOutput",
                             "enable CaptureMode Output on the endpoint's DataCaptureConfig", "capture"),
    "duplicate_event_id": Reason("capture", "the eventId was already seen in this window",
                                 "the same capture object was copied twice under the root; remove the copy",
                                 "capture"),
    "binary_file": Reason("capture", "the file is compressed or binary, not JSON Lines",
                          "decompress it or move it out of the capture root", "capture"),
    # prepare: turning a call into records (what production was sent and answered)
    "unsplittable_input": Reason("prepare", "the request body does not split into records in its format",
                                 "set capture.input_format or capture.instances_path to match the payload", "capture"),
    "input_format_mismatch": Reason("prepare", "the request's format differs from the run's replay format",
                                    "run the other content type separately with capture.input_format", "capture"),
    "output_count_mismatch": Reason("prepare", "production answered a different number of records than it was sent",
                                    "set production.output.records_path so the response splits like the request",
                                    "capture"),
    "record_too_large": Reason("prepare", "one record is larger than replay.max_payload_mb",
                               "raise replay.max_payload_mb (SageMaker rejects such records too)", "capture"),
    "csv_width_mismatch": Reason("prepare", "a CSV record has a different number of columns than the others",
                                 "the caller sent rows of mixed width; the candidate cannot be judged on them",
                                 "capture"),
    # replay: the candidate's transform
    "replay_file_failed": Reason("replay", "the candidate failed on this record's file (errors, timeouts, a crash, "
                                 "a wrong number of answers or answers that do not parse)",
                                 "see replay/candidate.json and the model server log; fix the candidate, or "
                                 "re-run the same run id to retry a transient failure", "candidate"),
    "replay_output_missing": Reason("replay", "no transform output where the join looks for it, or the transform "
                                    "could not be run on the file (unreadable input, input filter, job settings)",
                                    "see replay/candidate.json; check the Batch Transform output layout "
                                    "(<input>.out beside each input) and re-run the same run id", "evaluation"),
    "candidate_count_mismatch": Reason("replay", "the candidate answered a different number of records than the "
                                       "request held", "the model must answer one record per input record",
                                       "candidate"),
    "replay_output_mismatch": Reason("replay", "the .out does not line up with the replay input",
                                     "the join cannot pair the output with its records (echo, line or layout); "
                                     "check DataProcessing JoinSource=Input and AssembleWith Line", "evaluation"),
    # join: reading both answers
    "unparsable_production_output": Reason("join", "production's captured answer does not parse",
                                           "set production.output to the response format", "capture"),
    "unparsable_candidate_output": Reason("join", "the candidate's answer does not parse",
                                          "set candidate.output to the response format", "candidate"),
    # join: answers that parse but hold no finite value
    "candidate_invalid_score": Reason("join", "the candidate answered a NaN or infinite score or label, or "
                                              "neither a score nor a label where production answered one",
                                      "the candidate model produced no usable answer for this record; check its "
                                      "inference code on this input, or candidate.output if it answers in "
                                      "another shape", owner="candidate"),
    "production_invalid_score": Reason("join", "production's captured answer has a NaN or infinite score or label",
                                       "the production model answered no usable value; the record cannot be "
                                       "compared and is excluded", owner="capture"),
}

# Why the transformer gave a file no .out (steps.transformer.FAILURE_REASONS): these are the candidate's doing.
CANDIDATE_TRANSFORM_FAILURES = ("timeout", "connection_error", "truncated_response", "output_count_mismatch",
                                "output_unparsable")


def replay_failure_code(transform_reason: str | None) -> str:
    """The quarantine code of a record whose candidate transform failed for transform_reason (None: no .out at all).

    The candidate's own failures (an HTTP error status, timeouts, a crash, a wrong number of answers,
    answers that do not parse) count against it; anything else (unreadable input, an input or output
    filter, job settings, an output missing where the join looks) is the evaluation's own loss.
    """
    reason = transform_reason or ""
    if reason.startswith("http_") or reason in CANDIDATE_TRANSFORM_FAILURES:
        return "replay_file_failed"
    return "replay_output_missing"


def owner_of(code: str) -> Owner:
    """Whose loss a quarantine code is; an undeclared code is the evaluation's, never the candidate's."""
    declared = REASONS.get(code)
    return declared.owner if declared is not None else "evaluation"


PAYLOAD_FREE_DETAILS = frozenset({
    "malformed_json", "truncated_line", "not_utf8", "not_capture_record", "unknown_event_version", "unknown_encoding",
    "invalid_base64", "missing_input", "missing_output", "duplicate_event_id", "binary_file", "input_format_mismatch",
    "output_count_mismatch", "record_too_large", "csv_width_mismatch", "replay_output_mismatch",
})
"""Codes whose detail is built from positions, sizes, names and parser messages only. Any other detail
(a model's error body, an answer that does not parse, a request that does not split) may quote the payload."""


def withheld_detail(code: str, detail: str) -> str:
    """The detail to publish when captured inputs are hashed or dropped: as is if it cannot hold payload."""
    if code in PAYLOAD_FREE_DETAILS:
        return detail
    known = REASONS.get(code)
    meaning, fix = (known.meaning, known.fix) if known else (code, "see the run folder")
    return f"{meaning} (detail withheld: it may quote the payload, and tables.input_text is not keep); {fix}"


def reason(code: str) -> Reason:
    """The declared reason for a code; unknown codes are a programming error."""
    return REASONS[code]
