"""Shared test plumbing.

Real tools (sshd, cloud-init, qemu, zbarimg, root) are required, not optional: on a laptop a test that
lacks one skips with the reason; in CI (CI=true) that skip is turned into a failure, so nothing real
is silently left out.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import paramiko
import pytest

IN_CI = os.environ.get("CI") == "true"


def require(condition: bool, reason: str) -> None:
    """Skip (locally) or fail (in CI) unless ``condition`` holds."""
    if not condition:
        if IN_CI:
            pytest.fail(f"required in CI: {reason}", pytrace=False)
        pytest.skip(reason)


def require_tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    require(path is not None, f"needs {name} (make deps installs it as root)")
    assert path is not None
    return path


def require_root() -> None:
    require(os.geteuid() == 0, "needs root (namespaces, bind mounts)")


def assert_no_terminal_and_no_forwarding(login: Any, port: int) -> None:
    """A logged-in service account (a vpsctl.sshclient.Login) is refused a terminal and a forwarded port."""
    assert login.transport is not None
    channel = login.transport.open_session()
    with pytest.raises(paramiko.SSHException):
        channel.get_pty()
    channel.close()
    with pytest.raises(paramiko.ChannelException):
        login.transport.open_channel("direct-tcpip", ("127.0.0.1", port), ("127.0.0.1", 0))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The VM tests first: they take longest, mostly waiting, and under `-n 2 --dist loadfile` (make test) the
    other worker runs the rest meanwhile."""
    items.sort(key=lambda item: item.get_closest_marker("vm") is None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which must run every real test: {report.longrepr}"


@pytest.fixture(autouse=True)
def pulumi_mocks():  # type: ignore[no-untyped-def]
    """Every test runs with the recording mock engine installed.

    Forgetting set_mocks raises nothing (the SDK fakes responses and tests pass without testing), so it
    is never left to a test to remember. ``components.mockengine.run`` installs a fresh one per run.
    """
    from pulumi.runtime import mocks, settings

    from components.mockengine import PROJECT, DeterministicMocks, RecordingMonitor

    monitor = RecordingMonitor(DeterministicMocks())
    settings.ROOT.set(None)
    mocks.set_mocks(monitor.mocks, project=PROJECT, stack="test", preview=False, monitor=monitor)
    yield monitor
