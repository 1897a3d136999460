"""The session-end check: a test session that leaves a process running fails and names it, an orphan too;
one that stops what it started passes."""

from __future__ import annotations

import pytest

from tests.conftest import REPO

ORPHAN = '''
import subprocess, sys

def test_starts_a_server_and_loses_it():
    # the child starts a grandchild and exits: the grandchild is nobody's child any more
    grandchild = "import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])"
    subprocess.run([sys.executable, "-c", grandchild], check=True)
'''

STOPPED = '''
import subprocess, sys

def test_starts_a_server_and_stops_it():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    process.terminate()
    process.wait()
'''


@pytest.fixture
def inner(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    return pytester


def test_a_session_that_leaves_a_process_running_fails_and_names_it(inner):
    inner.makepyfile(test_orphan=ORPHAN)
    result = inner.runpytest_subprocess("-p", "tests.process_guard", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*processes left running by the tests (killed now):*", "*time.sleep(120)*",
                                 "*1 passed*"])


def test_a_session_that_stops_its_processes_passes(inner):
    inner.makepyfile(test_stopped=STOPPED)
    result = inner.runpytest_subprocess("-p", "tests.process_guard", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK
    assert "left running" not in result.stdout.str()
