"""report.html in a real browser: headless Chromium (Debian's) loads it with no console errors and shows the verdict.

Outside CI the test skips when /usr/bin/chromium is missing; in CI (CI=true) a missing browser fails it.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from analysis.gate import decide
from analysis.report import build_report, render_html
from analysis.results import Accounting
from steps.config import GateCheck, GateConfig, PolicyConfig
from test_report import RUN_INFO, _computed

CHROMIUM = os.environ.get("SHADOW_EVAL_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--enable-logging=stderr", "--v=0"]


def _chromium() -> str:
    found = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but no Chromium at {CHROMIUM}: install Debian's chromium (the Makefile does)")
    pytest.skip(f"no Chromium at {CHROMIUM}; install Debian's chromium to run the browser test")


def _render(tmp_path: Path, page: str) -> tuple[str, list[str]]:
    """The DOM Chromium built from the page, and every console message it logged."""
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    done = subprocess.run([_chromium(), *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                           path.as_uri()], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done.stdout, console


def test_the_report_loads_without_console_errors_and_shows_the_verdict(tmp_path):
    comparison = _computed()
    # 90 records: a wide accuracy margin lets the default policy decide.
    gate = GateConfig(min_records=10, min_coverage=0.9, policy=PolicyConfig(accuracy_margin=0.5), checks=(
        GateCheck("label_agreement", 0.5, slices=True),))
    accounting = Accounting(captured=90, joined=90, quarantined=0)
    decision = decide(comparison, accounting, gate)
    dom, console = _render(tmp_path, render_html(build_report(RUN_INFO, accounting, comparison, decision)))
    assert console == []
    verdict = re.search(r'<div class="banner (ok|bad|wait)" id="verdict"><h1>(\w+)</h1>', dom)
    assert verdict and verdict.group(2) == decision.status == "Approved"
    assert dom.count("<svg") >= 5 and "Slices" in dom and RUN_INFO["run_id"] in dom


def test_the_browser_check_does_catch_console_errors(tmp_path):
    """The harness itself: a page that errors must be seen to error."""
    _, console = _render(tmp_path, "<!DOCTYPE html><html><body><script>missing();</script></body></html>")
    assert any("missing is not defined" in line for line in console)
