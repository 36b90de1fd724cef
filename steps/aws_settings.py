"""AWS-only helpers over the `aws:` section of a config (steps.config.AwsSettings)."""
from __future__ import annotations

from pathlib import Path

from steps.config import AwsSettings, Config, ConfigError, load_config


def load_aws_config(path: str | Path) -> tuple[Config, AwsSettings]:
    """Read a config file that must describe the account in its `aws:` section."""
    config = load_config(path)
    if config.aws is None:
        raise ConfigError(str(path), "aws", "required for the SageMaker pipeline (see docs/aws.md)")
    return config, config.aws


def replay_groups(settings: AwsSettings, config: Config) -> tuple[str, ...]:
    """The groups the pipeline replays: aws.replay_groups, else the one capture.input_format names."""
    if settings.replay_groups:
        return settings.replay_groups
    return (config.capture.input_format,)
