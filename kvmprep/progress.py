"""The live progress display of a run, on stderr.

On a terminal: one status line rewritten in place, the task that runs and the run-wide counts.
Elsewhere (CI logs, pipes): a log, one plain line per task when it ends, with that task's own
outcome per host, and no escape codes. The CLI shows no progress with ``-v``, where Ansible's
own output is the progress.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from kvmprep.runner import TaskOutcome

if TYPE_CHECKING:
    from kvmprep.runner import RunState, TaskRecord

_CLEAR_LINE = "\r\x1b[K"
_SEPARATOR = "  ·  "
RED = "31"
GREEN = "32"
YELLOW = "33"
BOLD_RED = "1;31"
# Up to this many hosts of one outcome are named in a log line; more are counted (a fleet's
# names would make a line nobody reads).
NAMED_HOSTS = 3


def use_color(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    environ = os.environ if environ is None else environ
    return bool(_isatty(stream) and not environ.get("NO_COLOR"))


def paint(text: str, sgr: str, *, color: bool) -> str:
    return f"\x1b[{sgr}m{text}\x1b[0m" if color else text


@dataclass
class Progress:
    """An observer for ``run_playbook``: call it with the live ``RunState`` after each event."""

    stream: TextIO
    tty: bool
    color: bool
    _line: str = ""
    #: The run being logged: ``check`` runs several playbooks, each with its own state.
    _state: RunState | None = None
    #: How many of its tasks are logged (or folded) already.
    _logged: int = 0
    #: Numbers of the tasks skipped on every host since the last line, to fold into one.
    _skipped: list[int] = field(default_factory=list)

    @classmethod
    def for_stream(cls, stream: TextIO, environ: Mapping[str, str] | None = None) -> Progress:
        return cls(stream=stream, tty=_isatty(stream), color=use_color(stream, environ))

    def start(self, what: str) -> None:
        """Say what is starting, before Ansible's first event (its start-up takes a second)."""
        if self.tty:
            text = self._fit(f"[starting] {what}")
            self._redraw(text, text)

    def __call__(self, state: RunState) -> None:
        if self.tty:
            if state.task_number:
                self._redraw(*self._status(state))
            return
        if state is not self._state:
            self._log(final=True)
            self._state, self._logged = state, 0
        self._log(final=False)

    def close(self) -> None:
        """End the display so the summary starts on a clean line: remove the status line, or
        log what is left (a task an interruption left unfinished, skipped tasks to fold)."""
        if self.tty and self._line:
            self._write(_CLEAR_LINE)
            self._line = ""
        elif not self.tty:
            self._log(final=True)

    def _log(self, *, final: bool) -> None:
        """Write a line for each task that ended; with ``final``, also for one that did not."""
        tasks = self._state.tasks if self._state is not None else []
        for task in tasks[self._logged :]:
            if not (task.ended or final):
                break
            self._logged += 1
            if task.ended and all(o is TaskOutcome.SKIPPED for o in task.outcomes.values()):
                # Folded rather than left out: the task numbers of the log stay contiguous, so
                # a reader sees that nothing was dropped, and a task that should have run but
                # was skipped (a wrong condition) still leaves a trace; a run of them costs one
                # line.
                self._skipped.append(task.number)
                continue
            self._write_folded()
            self._write(_task_line(task) + "\n")
        if final:
            self._write_folded()

    def _write_folded(self) -> None:
        if not self._skipped:
            return
        first, last = self._skipped[0], self._skipped[-1]
        which = f"task {first}" if first == last else f"tasks {first}-{last}"
        self._skipped = []
        self._write(f"({which} skipped on every host)\n")

    def _status(self, state: RunState) -> tuple[str, str]:
        """The status text, plain and (when enabled) coloured, fitted to the terminal width."""
        prefix = f"[task {state.task_number}] "
        plain_counts, colored_counts = self._counts(state)
        name = self._fit(state.task_name or "", reserved=len(prefix + plain_counts))
        return prefix + name + plain_counts, prefix + name + colored_counts

    def _fit(self, text: str, reserved: int = 0) -> str:
        """Cut ``text`` so the status line never wraps (a wrapped line cannot be redrawn)."""
        if not self.tty:
            return text
        room = max(shutil.get_terminal_size().columns - 1 - reserved, 10)
        return text if len(text) <= room else text[: room - 1] + "…"

    def _counts(self, state: RunState) -> tuple[str, str]:
        hosts = list(state.hosts.values())
        if not hosts:  # the first task has started and no host has answered yet
            return "", ""
        failed = sum(1 for h in hosts if h.failures)
        unreachable = sum(1 for h in hosts if h.unreachable and not h.failures)
        changed = sum(1 for h in hosts if h.changed and not (h.failures or h.unreachable))
        ok = len(hosts) - failed - unreachable - changed
        counts = [("ok", ok, GREEN), ("changed", changed, YELLOW), ("failed", failed, BOLD_RED)]
        if unreachable:
            counts.append(("unreachable", unreachable, RED))
        # Run-wide, not this task's: a host that changed at task 3 counts as changed from then on.
        head = f"{_SEPARATOR}run so far, hosts {len(hosts)}: "
        plain = " ".join(f"{word} {n}" for word, n, _ in counts)
        colored = " ".join(
            f"{word} {paint(str(n), sgr, color=self.color and n > 0)}" for word, n, sgr in counts
        )
        return head + plain, head + colored

    def _redraw(self, plain: str, shown: str) -> None:
        if plain == self._line:
            return
        self._line = plain
        self._write(_CLEAR_LINE + shown)

    def _write(self, text: str) -> None:
        # A closed terminal (SIGHUP) must not turn an interrupted run into a crash: the
        # progress line is a courtesy, the run goes on and the summary says what happened.
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass


def _task_line(task: TaskRecord) -> str:
    """``[task 5] Add oneadmin to the groups  ·  changed: ceo-a2; ok: ceo-a1``: what this task
    did on each host, worst outcome first; hosts it is still running on are "unfinished"."""
    by_outcome: dict[TaskOutcome, list[str]] = {}
    for host, outcome in task.outcomes.items():
        by_outcome.setdefault(outcome, []).append(host)
    groups: list[tuple[str, list[str]]] = [
        (outcome.value, by_outcome[outcome]) for outcome in TaskOutcome if outcome in by_outcome
    ]
    if task.running or not task.ended:
        groups.append(("unfinished", list(task.running)))
    parts = []
    for word, hosts in groups:
        if not hosts:
            parts.append(word)
        elif len(hosts) <= NAMED_HOSTS:
            parts.append(f"{word}: {', '.join(sorted(hosts))}")
        else:
            parts.append(f"{word} {len(hosts)}")
    handler = " (handler)" if task.handler else ""
    return f"[task {task.number}] {task.name}{handler}{_SEPARATOR}{'; '.join(parts)}"


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False
