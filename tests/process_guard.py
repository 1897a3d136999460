"""A test session fails when a test left a process running: every process a test starts inherits a marker
in its environment, so one left behind is found at the end even when its parent is gone (an orphan)."""

from __future__ import annotations

import os
import uuid

import psutil
import pytest

SESSION_MARK = "SCOUTLESS_TEST_SESSION"


def pytest_sessionstart(session) -> None:
    os.environ[SESSION_MARK] = f"{os.getpid()}-{uuid.uuid4().hex}"


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _own_resource_tracker(process: psutil.Process, me: int) -> bool:
    """multiprocessing's resource tracker of this very process (a process pool started it, the flow's training
    does): it lives as long as its parent and ends with it."""
    return process.ppid() == me and any("multiprocessing.resource_tracker" in part for part in process.cmdline())


def _left_behind() -> list[psutil.Process]:
    mark, me = os.environ.get(SESSION_MARK), os.getpid()
    found = []
    for process in psutil.process_iter(["pid"]):
        if process.pid == me:
            continue
        try:
            if process.environ().get(SESSION_MARK) == mark and _alive(process) \
                    and not _own_resource_tracker(process, me):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def pytest_sessionfinish(session, exitstatus) -> None:
    """Fail the run when a test left a process running (it is killed, and named)."""
    if SESSION_MARK not in os.environ:
        return
    left = _left_behind()
    if left:
        psutil.wait_procs(left, timeout=5)   # one still stopping gets a moment
    left = [process for process in left if _alive(process)]
    if not left:
        return
    names = []
    for process in left:
        try:
            names.append(f"{process.pid} {' '.join(process.cmdline())[:200]}")
            process.kill()
        except psutil.NoSuchProcess:
            continue
    session.config.get_terminal_writer().line(
        "\nprocesses left running by the tests (killed now):\n  " + "\n  ".join(names), red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
