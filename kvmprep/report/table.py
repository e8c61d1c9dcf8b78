"""The terminal report, in the style of virt-host-validate: one line per control per host."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

from kvmprep import content

# The judging code is the collection's (plugins/plugin_utils): importable once a checkout's
# ansible_collections directory is on sys.path (kvmprep depends on the collection).
content.import_collection()

from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.evaluate import (
    HostReport,
    Verdict,
    clusters_of,
    host_verdict,
)
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.migration import (
    ClusterMigration,
    Link,
)
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import Status
from kvmprep.progress import BOLD_RED, GREEN, RED, YELLOW, paint

STATUS_COLOR = {
    Status.PASS: GREEN,
    Status.WARN: YELLOW,
    Status.FAIL: BOLD_RED,
    Status.SKIP: "2",  # dim
    Status.ERROR: RED,
}
VERDICT_COLOR = {
    Verdict.COMPLIANT: GREEN,
    Verdict.NON_COMPLIANT: BOLD_RED,
    Verdict.NOT_EVALUATED: RED,
}
LINK_COLOR = {
    Link.OK: GREEN,
    Link.AT_RISK: YELLOW,
    Link.BLOCKED: BOLD_RED,
    Link.UNKNOWN: RED,
}
# Wide enough for the longest title, so that the statuses line up.
TITLE_WIDTH = 44


def control_lines(report: HostReport, *, color: bool = False, quiet: bool = False) -> list[str]:
    """``  KVM-001  CPU virtualization extensions ....... WARN (hint)`` for each control."""
    if report.error:
        return [f"  {paint('ERROR', RED, color=color)} {report.error}"]
    lines = []
    for result in report.results:
        if quiet and result.status is Status.PASS:
            continue
        title = f"{result.control.title} ".ljust(TITLE_WIDTH, ".")
        status = paint(str(result.status), STATUS_COLOR[result.status], color=color)
        hint = f" ({result.message})" if result.message else ""
        lines.append(f"  {result.control.id:<9} {title} {status}{hint}")
        # What to do comes with what is wrong: the operator should not need `kvmprep controls`.
        if result.status is Status.FAIL:
            lines.append(f"{'':12}fix: {result.remediation}")
    return lines


def host_summary(report: HostReport, *, color: bool = False, strict: bool = False) -> str:
    verdict = host_verdict(report, strict=strict)
    counts = ", ".join(
        f"{report.count(status)} {status}" for status in Status if report.count(status)
    )
    return f"{report.name}: {paint(verdict, VERDICT_COLOR[verdict], color=color)} ({counts})"


def fleet_summary(
    reports: Sequence[HostReport], *, color: bool = False, strict: bool = False
) -> str:
    verdicts = [host_verdict(r, strict=strict) for r in reports]
    parts = [
        paint(f"{verdicts.count(v)} {v}", VERDICT_COLOR[v], color=color)
        for v in (Verdict.COMPLIANT, Verdict.NON_COMPLIANT, Verdict.NOT_EVALUATED)
        if verdicts.count(v)
    ]
    hosts = f"{len(reports)} host{'s' if len(reports) != 1 else ''}"
    return f"fleet: {hosts}, {', '.join(parts) or 'nothing evaluated'}"


def render_table(
    reports: Sequence[HostReport],
    stream: TextIO,
    *,
    color: bool = False,
    quiet: bool = False,
    strict: bool = False,
) -> None:
    """Every host's control lines and summary line, then the fleet line."""
    for report in reports:
        lines = control_lines(report, color=color, quiet=quiet)
        if lines:
            stream.write(f"{report.name}\n" + "".join(f"{line}\n" for line in lines))
    render_summary(reports, stream, color=color, strict=strict)


def cluster_summary(cluster: ClusterMigration, *, color: bool = False) -> str:
    """``cluster default (2 hosts): 1 of 2 directions blocked: ...``, coloured by verdict."""
    line = cluster.summary()
    head, sep, rest = line.partition(": ")
    return f"{head}{sep}{paint(rest, LINK_COLOR[cluster.verdict], color=color)}"


def render_summary(
    reports: Sequence[HostReport], stream: TextIO, *, color: bool = False, strict: bool = False
) -> None:
    """The per-host summary lines, the fleet line, then one line per OpenNebula cluster
    (live migration between its hosts; not for a run of one host: nothing to migrate)."""
    lines = [host_summary(r, color=color, strict=strict) for r in reports]
    lines.append(fleet_summary(reports, color=color, strict=strict))
    if len(reports) > 1:
        lines += [cluster_summary(c, color=color) for c in clusters_of(reports)]
    stream.write("".join(f"{line}\n" for line in lines))
