"""Run the examples as the README says: real subprocesses against a real broker.

``example(broker, "hello/service.py", ...)`` starts ``python examples/hello/service.py
--url <broker> ...`` with its output drained into a ``BrokerProcess`` (its
``wait_for_output`` synchronises on what the program prints, never on a sleep). Every
process a test starts is stopped by PID at teardown.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from tests.support.processes import ROOT, BrokerProcess

EXAMPLES = ROOT / "examples"

Example = Callable[..., BrokerProcess]


def example_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@pytest.fixture
def example() -> Iterator[Example]:
    """A factory that starts an example script (``stdin=True`` gives it a pipe)."""
    started: list[BrokerProcess] = []

    def start(broker: BrokerProcess, script: str, *args: str, stdin: bool = False) -> BrokerProcess:
        argv = [sys.executable, str(EXAMPLES / script), *args, "--url", broker.url]
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=example_env(),
        )
        handle = BrokerProcess(proc=proc, url=broker.url, args=argv)
        started.append(handle)
        return handle

    yield start
    for handle in started:
        if handle.proc.stdin is not None and not handle.proc.stdin.closed:
            handle.proc.stdin.close()
        handle.stop(timeout=5)


def finish(handle: BrokerProcess, timeout: float = 15.0) -> str:
    """Wait for an example to exit on its own; return its output, fail on a bad status."""
    try:
        code = handle.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        handle.kill()
        raise AssertionError(f"{handle.args} did not exit; output:\n{handle.output}") from None
    output = _until_eof(handle)  # the reader thread has seen every line
    assert code == 0, f"{handle.args} exited with {code}:\n{output}"
    return output


def _until_eof(handle: BrokerProcess) -> str:
    with handle._cond:
        handle._cond.wait_for(lambda: bool(handle.lines) and handle.lines[-1] == "", timeout=5)
        return "".join(handle.lines)


def send_line(handle: BrokerProcess, line: str) -> None:
    """Type a line into an example's standard input."""
    assert handle.proc.stdin is not None
    handle.proc.stdin.write(line + "\n")
    handle.proc.stdin.flush()
