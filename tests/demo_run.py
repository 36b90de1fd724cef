"""One small demo run per test session, shared by the slow tests that need a real workspace."""
from __future__ import annotations

import atexit
import dataclasses
import functools
import shutil
import tempfile
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class DemoRun:
    workspace: Path
    world: Any
    outcome: Any
    config: Any


@functools.cache
def demo_run() -> DemoRun:
    """build_world + run_local once (~40 s); the folder is removed when the test process ends."""
    import pipeline
    from steps import demo
    from steps.config import load_config

    root = Path(tempfile.mkdtemp(prefix="shadow-eval-demo-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    world = demo.build_world(root / "ws", requests=120, seed=7)
    config = load_config(world.config_path)
    outcome = pipeline.run_local(config, candidate_package=world.package_id)
    return DemoRun(root / "ws", world, outcome, config)
