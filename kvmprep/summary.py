"""The end-of-run report on stderr: one row per host, then why each broken host broke."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from kvmprep.progress import BOLD_RED, GREEN, RED, YELLOW, paint
from kvmprep.runner import HostStatus

if TYPE_CHECKING:
    from kvmprep.runner import HostState, RunResult

_COLUMNS = ("OK", "CHANGED", "FAILED", "UNREACHABLE", "SKIPPED")
_STATUS_COLOR = {
    HostStatus.OK: GREEN,
    HostStatus.CHANGED: YELLOW,
    HostStatus.FAILED: BOLD_RED,
    HostStatus.UNREACHABLE: RED,
}
# A failure message longer than this is cut: the artifacts keep the whole output.
_MESSAGE_LINES = 6


def render_summary(
    result: RunResult, stream: TextIO, *, color: bool, not_reached: Sequence[str] = ()
) -> None:
    """Write the host table, the failures, and where the artifacts of a failed run are."""
    lines: list[str] = []
    # A host only the controller-side settings check looked at is not a row of the table.
    reached = tuple(h for h in result.hosts if h.reached)
    if reached:
        lines += _table(reached, color=color)
        lines.append(_headline(result, reached))
    if not_reached:
        lines.append(
            f"Not reached (the rollout stopped before their batch; nothing ran on them): "
            f"{', '.join(not_reached)}"
        )
    warned = [h for h in result.hosts if h.warnings]
    if warned:
        lines += ["", "Warnings:"]
    for host in warned:
        for warning in host.warnings:
            first, *rest = warning.splitlines() or [""]
            lines += [f"{host.name}: {first}", *_indent("\n".join(rest))]
    refused = [h for h in result.hosts if h.invalid_settings]
    if refused:
        nothing = " (nothing was changed)" if result.invalid_settings else ""
        lines += ["", f"Invalid settings{nothing}:"]
    for host in refused:
        lines += [f"{host.name}: {line}" for line in host.invalid_settings]
    broken = [
        h
        for h in result.hosts
        if h.status in (HostStatus.FAILED, HostStatus.UNREACHABLE) and not h.invalid_settings
    ]
    if broken:
        lines.append("")
    for host in broken:
        lines += _failure(host, color=color)
    if result.error and not result.input_error:
        lines += ["", "Ansible reported an error not attributed to a host:", *_indent(result.error)]
    if result.interrupted:
        lines += ["", *_interrupted(result)]
    if result.exit_status != 0:
        lines += ["", f"Run artifacts: {result.artifact_dir}"]
    stream.write("\n".join(lines) + "\n")
    stream.flush()


def _table(hosts: tuple[HostState, ...], *, color: bool) -> list[str]:
    width = max(len("HOST"), *(len(h.name) for h in hosts))
    header = "  ".join(["HOST".ljust(width), *_COLUMNS, "STATUS"])
    rows = [header]
    for host in hosts:
        counts = (host.ok, host.changed, host.failures, host.unreachable, host.skipped)
        cells = [str(n).rjust(len(title)) for n, title in zip(counts, _COLUMNS, strict=True)]
        status = paint(host.status.value, _STATUS_COLOR[host.status], color=color)
        rows.append("  ".join([host.name.ljust(width), *cells, status]))
    return rows


def _headline(result: RunResult, hosts: tuple[HostState, ...]) -> str:
    by_status = dict.fromkeys(HostStatus, 0)
    for host in hosts:
        by_status[host.status] += 1
    parts = [f"{n} {status.value}" for status, n in by_status.items() if n]
    plural = "s" if len(hosts) != 1 else ""
    headline = f"{len(hosts)} host{plural}: {', '.join(parts)}"
    if result.check_mode:
        headline += " (check mode: nothing was changed; 'changed' means would change)"
    return headline


def _failure(host: HostState, *, color: bool) -> list[str]:
    word = paint(host.status.value, _STATUS_COLOR[host.status], color=color)
    task = f' at task "{host.failed_task}"' if host.failed_task else ""
    message = (host.message or "no message").splitlines() or ["no message"]
    if len(message) > _MESSAGE_LINES:
        message = [*message[:_MESSAGE_LINES], "(cut; see the run artifacts)"]
    return [f"{host.name}: {word}{task}: {message[0]}", *_indent("\n".join(message[1:]))]


def _interrupted(result: RunResult) -> list[str]:
    hosts = result.partially_changed
    if hosts:
        first = "Interrupted: these hosts may be partially changed: " + ", ".join(hosts)
    else:
        first = "Interrupted; no host had a change or a task in progress."
    ended = "Ansible's processes were ended"
    if result.signal_name:
        ended += f" after {result.signal_name}"
    if result.killed:
        ended += f" ({len(result.killed)} ignored SIGTERM and were killed)"
    return [first, ended + "."]


def _indent(text: str) -> list[str]:
    return [f"    {line}" for line in text.splitlines()]
