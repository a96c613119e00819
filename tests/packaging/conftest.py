"""The .deb end-to-end test: a per-step PASS/FAIL table at the end of the run.

Each checklist item of the end-to-end test is its own test function, so pytest already reports
them one by one; this adds a compact table that reads like the checklist, printed whether or not
output capture is on.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

_STEPS: dict[str, tuple[str, float]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "tests/packaging/" not in report.nodeid.replace("\\", "/"):
        return
    name = report.nodeid.split("::")[-1]
    outcome, seconds = _STEPS.get(name, ("PASS", 0.0))
    if not outcome.startswith("FAIL"):
        if report.failed:
            # A failure in a fixture (setup) or in clean-up (teardown) counts against the step.
            outcome = "FAIL" if report.when == "call" else f"FAIL ({report.when})"
        elif report.skipped:
            outcome = "SKIP"
    _STEPS[name] = (outcome, seconds + report.duration)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _STEPS:
        return
    terminalreporter.section("ishowtts .deb end-to-end steps")
    for name, (outcome, seconds) in _STEPS.items():
        terminalreporter.write_line(f"{outcome:<16} {seconds:7.1f} s  {name}")
    failed = sum(1 for outcome, _ in _STEPS.values() if outcome.startswith("FAIL"))
    total = sum(seconds for _, seconds in _STEPS.values())
    verdict = "FAILED" if failed else "passed"
    terminalreporter.write_line(f"{verdict}: {len(_STEPS) - failed}/{len(_STEPS)} steps ok, {total:.0f} s in all")
