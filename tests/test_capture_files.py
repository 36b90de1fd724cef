"""steps.capture_files: the folder layout, window selection and line reading."""
from __future__ import annotations

import datetime as dt
import gzip

import pytest

from capture_helpers import at, capture_line, capture_path, write_capture_tree
from steps.capture_files import Window, list_capture_files, read_capture_file

EP, VAR = "churn", "AllTraffic"


def _line(when, event_id="e", **fields) -> str:
    return capture_line("1,2", "0.5", event_id=event_id, inference_time=when, **fields)


def _hours(listing) -> list[int]:
    return [file.hour.hour for file in listing.files]


@pytest.fixture
def hourly_tree(tmp_path):
    """One file per hour folder 08..12, each holding one record at :30 of its hour."""
    write_capture_tree(tmp_path, {capture_path(EP, VAR, at(h, 30)): [_line(at(h, 30), f"e{h}")] for h in range(8, 13)})
    return tmp_path


@pytest.mark.parametrize("window, hours", [
    pytest.param(Window(), [8, 9, 10, 11, 12], id="no-window"),
    pytest.param(Window(at(10), at(11)), [9, 10], id="one-hour-plus-spill-folder"),
    pytest.param(Window(at(10, 45), at(11, 15)), [9, 10, 11], id="floor-of-start"),
    pytest.param(Window(None, at(9)), [8], id="open-start"),
    pytest.param(Window(at(12)), [11, 12], id="open-end"),
    pytest.param(Window(at(10, day=20), at(11, day=20)), [], id="other-day"),
    pytest.param(Window(dt.datetime(2024, 1, 19, 10), dt.datetime(2024, 1, 19, 11)), [9, 10], id="naive-is-utc"),
])
def test_window_selects_hour_folders(hourly_tree, window, hours):
    assert _hours(list_capture_files(hourly_tree, window=window)) == hours


def test_record_spilling_into_next_hour_is_read_from_previous_folder(tmp_path):
    # The object was started at 09:59 and kept receiving records until 10:01.
    write_capture_tree(tmp_path, {capture_path(EP, VAR, at(9, 59)): [_line(at(9, 59), "a"), _line(at(10, 1), "b")]})
    window = Window(at(10), at(11))
    (file,) = list_capture_files(tmp_path, window=window).files
    lines = read_capture_file(file, window)
    assert [(line.call.event_id, line.in_window) for line in lines] == [("a", False), ("b", True)]


def test_unusable_line_with_a_time_is_windowed_by_it(tmp_path):
    write_capture_tree(tmp_path, {capture_path(EP, VAR, at(9, 59)): [_line(at(10, 1), output_encoding="TEXT")]})
    (file,) = list_capture_files(tmp_path).files
    (line,) = read_capture_file(file, Window(at(10), at(11)))
    assert (line.error.code, line.in_window) == ("unknown_encoding", True)


@pytest.mark.parametrize("folder_hour, window, in_window", [
    pytest.param(10, Window(at(10), at(11)), True, id="folder-in-window"),
    pytest.param(9, Window(at(10), at(11)), False, id="spill-folder"),
    pytest.param(10, Window(at(10, 30), at(11)), True, id="folder-overlaps-start"),
    pytest.param(11, Window(at(10), at(11)), False, id="folder-at-end"),
])
def test_record_without_time_follows_its_folder(tmp_path, folder_hour, window, in_window):
    write_capture_tree(tmp_path, {capture_path(EP, VAR, at(folder_hour)): [_line("{%s}")]})
    file = list_capture_files(tmp_path).files[0]
    (line,) = read_capture_file(file, window)
    assert (line.call.inference_time, line.in_window) == (None, in_window)


def test_filters_by_endpoint_and_variant(tmp_path):
    write_capture_tree(tmp_path, {capture_path(ep, var, at(10)): [_line(at(10))]
                                  for ep in ("a", "b") for var in ("AllTraffic", "Shadow-01")})

    def seen(**filters):
        return [(f.endpoint, f.variant) for f in list_capture_files(tmp_path, **filters).files]

    assert seen() == [("a", "AllTraffic"), ("a", "Shadow-01"), ("b", "AllTraffic"), ("b", "Shadow-01")]
    assert seen(endpoint="b") == [("b", "AllTraffic"), ("b", "Shadow-01")]
    assert seen(endpoint="a", variant="Shadow-01") == [("a", "Shadow-01")]
    assert seen(endpoint="missing") == []


def test_file_fields_follow_the_layout(tmp_path):
    relative = capture_path(EP, VAR, at(10, 5, 7))
    write_capture_tree(tmp_path, {relative: [_line(at(10, 5, 7))]})
    (file,) = list_capture_files(tmp_path).files
    assert (file.relative, file.endpoint, file.variant, file.hour, file.path) == (
        relative, EP, VAR, at(10), tmp_path / relative)
    assert relative.startswith("churn/AllTraffic/2024/01/19/10/05-07-000-")


@pytest.mark.parametrize("relative, problem", [
    ("stray.jsonl", "endpoint folder"),
    ("churn/stray.jsonl", "variant folder"),
    ("churn/AllTraffic/2024/01/19/stray.jsonl", "hour folder"),
    ("churn/AllTraffic/2024/1/19/10/x.jsonl", "2-digit month"),
    ("churn/AllTraffic/2024/01/xx/10/x.jsonl", "2-digit day"),
    ("churn/AllTraffic/2024/02/30/10/x.jsonl", "2-digit day"),
    ("churn/AllTraffic/2024/01/19/24/x.jsonl", "2-digit hour"),
    ("churn/AllTraffic/2024/01/19/10/extra/x.jsonl", "inside an hour folder"),
])
def test_paths_off_the_layout_are_reported(tmp_path, relative, problem):
    write_capture_tree(tmp_path, {relative: [_line(at(10))], capture_path(EP, VAR, at(10)): [_line(at(10))]})
    listing = list_capture_files(tmp_path)
    assert len(listing.files) == 1
    (misfit,) = listing.misfits
    assert relative.startswith(misfit.relative) and problem in misfit.problem


def test_missing_root_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="capture root"):
        list_capture_files(tmp_path / "nope")


GOOD = _line(at(10), "good")


@pytest.mark.parametrize("content, expected", [
    pytest.param(f"{GOOD}\n".encode(), [(1, None)], id="one-line"),
    pytest.param(f"{GOOD}\n\n{GOOD}\n".encode(), [(1, None), (3, None)], id="blank-line-skipped"),
    pytest.param(f"{GOOD}\n{GOOD}".encode(), [(1, None), (2, None)], id="complete-last-line-without-newline"),
    pytest.param(f"{GOOD}\n{GOOD[:40]}".encode(), [(1, None), (2, "truncated_line")], id="truncated-last-line"),
    pytest.param(f"{GOOD[:40]}\n{GOOD}\n".encode(), [(1, "malformed_json"), (2, None)], id="cut-line-with-newline"),
    pytest.param(f"{GOOD}\n".encode() + "{\"\u00e9".encode()[:-1], [(1, None), (2, "truncated_line")],
                 id="truncated-inside-utf8-char"),
    pytest.param(b"\xff\xfe\n" + f"{GOOD}\n".encode(), [(1, "not_utf8"), (2, None)], id="not-utf8"),
    pytest.param(gzip.compress(f"{GOOD}\n".encode()), [(1, "binary_file")], id="gzip"),
    pytest.param(b"PK\x03\x04zipped", [(1, "binary_file")], id="zip"),
    pytest.param(f"{GOOD}\n".encode() + b"\x00\x01\x02", [(1, "binary_file")], id="nul-bytes"),
    pytest.param(b"", [], id="empty-file"),
])
def test_reading_lines(tmp_path, content, expected):
    write_capture_tree(tmp_path, {capture_path(EP, VAR, at(10)): content})
    (file,) = list_capture_files(tmp_path).files
    lines = list(read_capture_file(file))
    assert [(line.number, line.error.code if line.error else None) for line in lines] == expected
    assert all((line.call is None) == (line.error is not None) for line in lines)


def test_unparsed_record_id_names_file_and_line(tmp_path):
    relative = capture_path(EP, VAR, at(10))
    write_capture_tree(tmp_path, {relative: [GOOD, "not json"]})
    (file,) = list_capture_files(tmp_path).files
    assert [line.unparsed_record_id for line in read_capture_file(file)][1] == f"{relative}#2"
