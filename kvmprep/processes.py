"""Ending ansible-playbook together with everything it started (Linux, read from /proc).

ansible-runner ends a cancelled run with SIGKILL to ansible-playbook's process group, but
Ansible's workers call ``setsid()`` (each is the leader of its own session), and so do its SSH
connections: they are outside that group, and a killed ansible-playbook never forwards the
signal to them. They then keep running their task on the hosts for minutes. Here the whole
tree is found from parent links before anything is signalled, each process and its group gets
SIGTERM (Ansible's own handlers then stop their workers), and what is left after a grace
period gets SIGKILL.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

GRACE_SECONDS = 3.0
_POLL_SECONDS = 0.1
_PROC = Path("/proc")


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    pgid: int
    state: str
    #: Clock ticks since boot when it started: tells a process from a later one with its pid.
    start: int


def read_proc(pid: int) -> Proc | None:
    try:
        text = (_PROC / str(pid) / "stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return Proc(pid, int(fields[1]), int(fields[2]), fields[0], int(fields[19]))
    except (IndexError, ValueError):
        return None


def all_processes() -> dict[int, Proc]:
    found = {}
    for entry in _PROC.iterdir() if _PROC.is_dir() else ():
        if entry.name.isdigit() and (proc := read_proc(int(entry.name))) is not None:
            found[proc.pid] = proc
    return found


def descendants(roots: Iterable[int], table: dict[int, Proc]) -> set[int]:
    """``roots`` and every process below them in ``table``."""
    children: dict[int, list[int]] = {}
    for proc in table.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    seen: set[int] = set()
    stack = [pid for pid in roots if pid in table]
    while stack:
        pid = stack.pop()
        if pid not in seen:
            seen.add(pid)
            stack.extend(children.get(pid, ()))
    return seen


def children_named(parent: int, word: str) -> list[int]:
    """The children of ``parent`` whose command line mentions ``word``."""
    found = []
    for proc in all_processes().values():
        if proc.ppid != parent:
            continue
        try:
            argv = (_PROC / str(proc.pid) / "cmdline").read_bytes()
        except OSError:
            continue
        if word.encode() in argv:
            found.append(proc.pid)
    return found


def end_tree(root: int, grace: float = GRACE_SECONDS) -> list[int]:
    """SIGTERM ``root``, its descendants and their process groups; SIGKILL what is still
    alive after ``grace`` seconds. Returns the pids that had to be killed."""
    known: dict[int, int] = {}  # pid -> start time

    def refresh() -> dict[int, Proc]:
        table = all_processes()
        alive = [pid for pid, start in known.items() if _same(table.get(pid), start)]
        for pid in descendants([root, *alive], table):
            known.setdefault(pid, table[pid].start)
        return table

    refresh()
    signalled: set[int] = set()
    deadline = time.monotonic() + grace
    while True:
        table = refresh()
        alive = [pid for pid, start in known.items() if _same(table.get(pid), start)]
        if not alive:
            return []
        if time.monotonic() >= deadline:
            break
        # New processes (a worker starting ssh) get the signal as soon as they are seen.
        _signal([table[pid] for pid in alive if pid not in signalled], signal.SIGTERM)
        signalled.update(alive)
        time.sleep(_POLL_SECONDS)
    _signal([table[pid] for pid in alive], signal.SIGKILL)
    return sorted(alive)


def _same(proc: Proc | None, start: int) -> bool:
    """Still the process we saw, and not a zombie waiting for its parent."""
    return proc is not None and proc.start == start and proc.state not in ("Z", "X")


def _signal(procs: Iterable[Proc], signum: signal.Signals) -> None:
    ours = {os.getpid(), os.getpgrp()}
    for proc in procs:
        if proc.pid in ours or proc.pid <= 1:
            continue
        try:
            # A group led by one of them holds what it started (a module, its command).
            if proc.pgid == proc.pid and proc.pgid not in ours:
                os.killpg(proc.pgid, signum)
            else:
                os.kill(proc.pid, signum)
        except OSError:  # gone meanwhile, or not ours to signal
            continue
