"""Why a captured record could not be used: one declared list of reasons.

Every captured record ends joined or quarantined with one of these codes. Each code says
which stage raises it and what the user can do about it; a test proves each has a case.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Reason:
    stage: str
    meaning: str
    fix: str
    owner: str = ""
    """Whose the lost record is: "capture", "candidate" or "evaluation" (docs/internals.md)."""


REASONS: dict[str, Reason] = {
    # capture: the line itself
    "malformed_json": Reason("capture", "the capture line is not valid JSON",
                             "check the file was not edited or cut; SageMaker writes one JSON object per line"),
    "truncated_line": Reason("capture", "the last line of the file is cut off",
                             "the object may still be uploading; re-run after SageMaker finishes the file"),
    "not_utf8": Reason("capture", "the line is not UTF-8 text",
                       "capture files are UTF-8 JSON Lines; the file may be binary or re-encoded"),
    "not_capture_record": Reason("capture", "the JSON object lacks captureData or eventMetadata.eventId",
                                 "only SageMaker data-capture records belong under the capture root"),
    "unknown_event_version": Reason("capture", "eventVersion is not \"0\"",
                                    "a newer capture format; update shadow-eval"),
    "unknown_encoding": Reason("capture", "encoding is not CSV, JSON or BASE64",
                               "the capture was written by something other than SageMaker"),
    "invalid_base64": Reason("capture", "BASE64 data does not decode",
                             "the payload was corrupted; nothing to replay"),
    "missing_input": Reason("capture", "the record has no endpointInput",
                            "enable CaptureMode Input on the endpoint's DataCaptureConfig"),
    "missing_output": Reason("capture", "the record has no endpointOutput",
                             "enable CaptureMode Output on the endpoint's DataCaptureConfig"),
    "duplicate_event_id": Reason("capture", "the eventId was already seen in this window",
                                 "the same capture object was copied twice under the root; remove the copy"),
    "binary_file": Reason("capture", "the file is compressed or binary, not JSON Lines",
                          "decompress it or move it out of the capture root"),
    # prepare: turning a call into records
    "unsplittable_input": Reason("prepare", "the request body does not split into records in its format",
                                 "set capture.input_format or capture.instances_path to match the payload"),
    "input_format_mismatch": Reason("prepare", "the request's format differs from the run's replay format",
                                    "run the other content type separately with capture.input_format"),
    "output_count_mismatch": Reason("prepare", "production answered a different number of records than it was sent",
                                    "set production.output.records_path so the response splits like the request"),
    "record_too_large": Reason("prepare", "one record is larger than replay.max_payload_mb",
                               "raise replay.max_payload_mb (SageMaker rejects such records too)"),
    "csv_width_mismatch": Reason("prepare", "a CSV record has a different number of columns than the others",
                                 "the caller sent rows of mixed width; the candidate cannot be judged on them"),
    # replay: the candidate or the production model again
    "replay_file_failed": Reason("replay", "the transform of this record's file failed (no .out)",
                                 "see replay/<side>.json and the model server log; re-run the same run id to retry"),
    "replay_output_mismatch": Reason("replay", "the .out does not line up with the replay input",
                                     "the model must answer one record per input record"),
    # join: reading both answers
    "unparsable_production_output": Reason("join", "production's captured answer does not parse",
                                           "set production.output to the response format"),
    "unparsable_candidate_output": Reason("join", "the candidate's answer does not parse",
                                          "set candidate.output to the response format"),
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
