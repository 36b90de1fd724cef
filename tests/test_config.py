"""Config: typed, checked once, and every error names the file and the key."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from steps.config import Config, ConfigError, config_from_mapping, load_config, to_mapping

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["local.yaml", "aws.example.yaml"])
def test_shipped_configs_load(name):
    config = load_config(CONFIGS / name)
    assert isinstance(config, Config)


def test_empty_mapping_gives_defaults():
    config = config_from_mapping({})
    assert config.replay.max_payload_mb == 6
    assert config.replay.invocation_max_retries == 3
    assert config.gate.checks == ()


BAD = [
    ({"captur": {}}, "captur", "unknown key"),
    ({"capture": {"rot": "x"}}, "capture.rot", "unknown key"),
    ({"capture": {"input_format": "xml"}}, "capture.input_format", "not one of"),
    ({"capture": {"window_start": "yesterday"}}, "capture.window_start", "ISO-8601"),
    ({"capture": {"window_start": "2024-01-02T00:00:00Z", "window_end": "2024-01-01T00:00:00Z"}},
     "capture.window_end", "after"),
    ({"replay": {"max_payload_mb": "6"}}, "replay.max_payload_mb", "integer"),
    ({"replay": {"max_payload_mb": 101}}, "replay.max_payload_mb", "outside"),
    ({"replay": {"invocation_max_retries": 4}}, "replay.invocation_max_retries", "outside"),
    ({"replay": {"max_payload_mb": 50, "max_concurrent_transforms": 3}}, "replay.max_concurrent_transforms", "<= 100"),
    ({"replay": {"noise_floor": "yes"}}, "replay.noise_floor", "true or false"),
    ({"gate": {"min_coverage": 1.5}}, "gate.min_coverage", "outside"),
    ({"gate": {"checks": [{"metric": "accuracy"}]}}, "gate.checks[0].threshold", "required"),
    ({"gate": {"checks": [{"metric": "accuracy", "threshold": 1, "severity": "fatal"}]}},
     "gate.checks[0].severity", "not one of"),
    ({"gate": {"checks": {"metric": "accuracy"}}}, "gate.checks", "expected a list"),
    ({"candidate": {"output": {"label_threshold": 2}}}, "candidate.output.label_threshold", "outside"),
    ({"registry": {"group": "bad group; drop table"}}, "registry.group", "plain name"),
    ({"tables": {"database": "x'y"}}, "tables.database", "plain name"),
    ({"compare": {"decimals": 1.5}}, "compare.decimals", "integer"),
    # the verdict policy
    ({"gate": {"min_records": 0}}, "gate.min_records", "outside [1"),
    ({"gate": {"checks": [{"metric": "accuracy", "threshold": float("nan")}]}}, "gate.checks[0].threshold",
     "finite"),
    ({"gate": {"checks": [{"metric": "accuracy", "threshold": float("inf")}]}}, "gate.checks[0].threshold",
     "finite"),
    ({"gate": {"checks": [{"metric": "label_agreement", "threshold": -0.1}]}}, "gate.checks[0].threshold",
     "negative"),
    ({"gate": {"checks": [{"metric": "acuracy", "threshold": 0.9}]}}, "gate.checks[0].metric", "not a metric"),
    ({"gate": {"checks": [{"metric": "label_agreement", "threshold": 0.9, "relative_to_production": True}]}},
     "gate.checks[0].relative_to_production", "not a per-model metric"),
    ({"gate": {"checks": [{"metric": "f1", "threshold": 0.9, "severity": "warning", "required": True}]}},
     "gate.checks[0].required", "only a critical"),
    ({"gate": {"policy": {"accuracy_margin": -0.01}}}, "gate.policy.accuracy_margin", "outside"),
    ({"gate": {"policy": {"equivalence_margin": float("nan")}}}, "gate.policy.equivalence_margin", "finite"),
    ({"gate": {"policy": {"minority_class_share": 0.9}}}, "gate.policy.minority_class_share", "outside"),
    ({"gate": {"policy": {"margin": 0.1}}}, "gate.policy.margin", "unknown key"),
]


def test_signed_and_per_class_thresholds_are_allowed():
    config = config_from_mapping({"gate": {"checks": [
        {"metric": "accuracy", "threshold": -0.02, "relative_to_production": True, "judge_on": "interval"},
        {"metric": "cohen_kappa", "threshold": -0.1}, {"metric": "class_recall:malignant", "threshold": 0.8},
        {"metric": "accuracy", "threshold": 0.9, "required": True}]}})
    assert [c.required for c in config.gate.checks] == [False, False, False, True]
    assert config.gate.policy.accuracy_margin == 0.01


@pytest.mark.parametrize("data, key, problem", BAD, ids=[case[1] for case in BAD])
def test_errors_name_the_file_and_key(data, key, problem):
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(data, "my.yaml")
    assert caught.value.key == key
    assert problem in caught.value.problem
    assert str(caught.value).startswith(f"my.yaml: {key}: ")


def test_load_reports_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("capture: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: <file>: not valid YAML"):
        load_config(broken)


def test_overrides_are_dotted_and_none_means_keep(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("capture:\n  root: a\n")
    config = load_config(path, {"capture.root": "b", "candidate.model": "m.tar.gz", "workspace": None})
    assert config.capture.root == "b"
    assert config.candidate.model == "m.tar.gz"
    assert config.workspace == ".shadow-eval"


def test_times_are_utc_and_round_trip():
    config = config_from_mapping({"capture": {"window_start": "2024-01-19T19:00:00", "window_end": "2024-01-19T22:00:00+02:00"}})
    assert config.capture.window_start == dt.datetime(2024, 1, 19, 19, tzinfo=dt.timezone.utc)
    assert config.capture.window_end == dt.datetime(2024, 1, 19, 20, tzinfo=dt.timezone.utc)
    assert to_mapping(config)["capture"]["window_start"] == "2024-01-19T19:00:00Z"
