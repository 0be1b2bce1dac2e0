"""Reliability tests: the `reliability` marker, `--soak` sizes and the summary table."""

from __future__ import annotations

import pytest

from tests.reliability.report import ReliabilityReport

REPORT = ReliabilityReport()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/reliability/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.reliability)


@pytest.fixture(scope="session")
def soak(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--soak"))


@pytest.fixture(scope="session")
def report() -> ReliabilityReport:
    return REPORT


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT.requests or REPORT.kills:
        terminalreporter.write_sep("=", "reliability summary")
        terminalreporter.write_line(REPORT.table())
