"""kvmprep.ptyclose: ansible-runner's pty children close without ptyprocess's 0.1 s sleep."""

from __future__ import annotations

import inspect
import time

import ansible_runner.runner
import pexpect

from kvmprep import ptyclose


def _close_seconds() -> float:
    """Seconds close() takes on a child that has exited and been reaped, as ansible-runner
    calls it (after isalive() turned false and EOF was read)."""
    child = pexpect.spawn("true", encoding="utf-8")
    deadline = time.monotonic() + 10
    while child.isalive():
        assert time.monotonic() < deadline, "'true' did not end"
        time.sleep(0.01)
    child.expect(pexpect.EOF, timeout=5)
    start = time.perf_counter()
    child.close()
    return time.perf_counter() - start


def test_children_spawned_inside_close_without_sleeping() -> None:
    with ptyclose.prompt_close() as changed:
        assert changed
        inside = min(_close_seconds() for _ in range(3))
    outside = min(_close_seconds() for _ in range(3))
    assert inside < 0.05, inside
    # ptyprocess's own sleep (delayafterclose = 0.1), what the context removes.
    assert outside >= 0.09, outside


def test_pexpect_is_restored_after_the_run() -> None:
    original = pexpect.spawn
    try:
        with ptyclose.prompt_close():
            assert pexpect.spawn is not original
            raise RuntimeError("the run failed")
    except RuntimeError:
        pass
    assert pexpect.spawn is original


def test_ansible_runner_spawns_through_the_wrapped_pexpect() -> None:
    # What prompt_close relies on: Runner.run() calls pexpect.spawn(...) on the pexpect module
    # it imported, looked up at each run.
    assert ansible_runner.runner.pexpect is pexpect
    assert "pexpect.spawn(" in inspect.getsource(ansible_runner.runner.Runner.run)
    with ptyclose.prompt_close():
        assert issubclass(ansible_runner.runner.pexpect.spawn, pexpect.pty_spawn.spawn)
        assert ansible_runner.runner.pexpect.spawn is not pexpect.pty_spawn.spawn
