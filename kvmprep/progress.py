"""The live progress display of a run, on stderr.

On a terminal: one status line rewritten in place. Elsewhere (CI logs, pipes): one plain
line per task, with no escape codes. The CLI shows no progress with ``-v``, where Ansible's
own output is the progress.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from kvmprep.runner import RunState

_CLEAR_LINE = "\r\x1b[K"
_SEPARATOR = "  ·  "
RED = "31"
GREEN = "32"
YELLOW = "33"
BOLD_RED = "1;31"


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
    _task_shown: int = 0
    _line: str = ""

    @classmethod
    def for_stream(cls, stream: TextIO, environ: Mapping[str, str] | None = None) -> Progress:
        return cls(stream=stream, tty=_isatty(stream), color=use_color(stream, environ))

    def start(self, what: str) -> None:
        """Say what is starting, before Ansible's first event (its start-up takes a second)."""
        if self.tty:
            text = self._fit(f"[starting] {what}")
            self._redraw(text, text)

    def __call__(self, state: RunState) -> None:
        if not state.task_number:
            return
        if self.tty:
            self._redraw(*self._status(state))
        elif state.task_number != self._task_shown:
            self._task_shown = state.task_number
            self._write(self._status(state)[0] + "\n")

    def close(self) -> None:
        """Remove the status line so the summary starts on a clean line."""
        if self.tty and self._line:
            self._write(_CLEAR_LINE)
            self._line = ""

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
        head = f"{_SEPARATOR}hosts {len(hosts)}: "
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


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False
