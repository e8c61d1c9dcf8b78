"""Judge hosts: facts in, one result per control out (on the controller, no host needed).

Host controls see one host's facts; fleet controls see every evaluated host at once and give
each its own result, so a fleet control is reported per host like any other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kvmprep.controls.catalog import CATALOG
from kvmprep.controls.model import (
    Control,
    Expect,
    HostFacts,
    MissingFact,
    Result,
    Status,
)


@dataclass(frozen=True)
class ControlResult:
    control: Control
    status: Status
    message: str


@dataclass(frozen=True)
class HostReport:
    name: str
    results: tuple[ControlResult, ...]
    #: Why the host could not be evaluated at all (unreachable, probe failed), else None.
    error: str | None = None

    def count(self, status: Status) -> int:
        return sum(1 for r in self.results if r.status is status)


@dataclass(frozen=True)
class HostInput:
    """What a run gathered for one host: its facts, or why there are none."""

    name: str
    facts: Mapping[str, Any] | None
    expect: Expect | None = None
    error: str | None = None


def _unexpected(exc: Exception) -> Result:
    if isinstance(exc, MissingFact):
        return Result.error(f"fact {exc} was not gathered")
    return Result.error(f"could not be evaluated: {type(exc).__name__}: {exc}")


def judge(control: Control, facts: Mapping[str, Any], expect: Expect) -> Result:
    """One control on one host; a judge that cannot decide gives ERROR, never an exception."""
    assert control.judge is not None
    try:
        return control.judge(facts, expect)
    except Exception as exc:  # a bug in one judge must not hide the other controls
        return _unexpected(exc)


def judge_fleet(control: Control, hosts: Sequence[HostFacts]) -> dict[str, Result]:
    """One fleet control over every evaluated host; a host it does not judge gets ERROR."""
    assert control.fleet_judge is not None
    try:
        results = dict(control.fleet_judge(hosts))
    except Exception as exc:
        return {h.name: _unexpected(exc) for h in hosts}
    missing = Result.error("not judged by the fleet control")
    return {h.name: results.get(h.name, missing) for h in hosts}


def evaluate_fleet(
    hosts: Sequence[HostInput], *, controls: Iterable[Control] = CATALOG
) -> tuple[HostReport, ...]:
    """Every control for every host, in the order given; fleet controls compare the hosts
    that have facts (a host without facts has every control as ERROR, ``error`` the reason)."""
    controls = tuple(controls)
    evaluated = [
        HostFacts(h.name, h.facts, h.expect or Expect()) for h in hosts if h.facts is not None
    ]
    fleet = {c.id: judge_fleet(c, evaluated) for c in controls if c.fleet_judge is not None}
    reports = []
    for host in hosts:
        if host.facts is None:
            reason = host.error or "no facts were gathered"
            results = tuple(ControlResult(c, Status.ERROR, reason) for c in controls)
            reports.append(HostReport(host.name, results, error=reason))
            continue
        expect = host.expect or Expect()
        row = []
        for control in controls:
            result = (
                fleet[control.id][host.name]
                if control.id in fleet
                else judge(control, host.facts, expect)
            )
            row.append(ControlResult(control, result.status, result.message))
        reports.append(HostReport(host.name, tuple(row)))
    return tuple(reports)


def evaluate_host(
    name: str,
    facts: Mapping[str, Any] | None,
    expect: Expect | None = None,
    *,
    error: str | None = None,
    controls: Iterable[Control] = CATALOG,
) -> HostReport:
    """One host alone (a fleet of one); ``facts`` is the probe's ``probe`` dict."""
    (report,) = evaluate_fleet([HostInput(name, facts, expect, error)], controls=controls)
    return report


class Verdict:
    COMPLIANT = "compliant"
    NON_COMPLIANT = "non-compliant"
    NOT_EVALUATED = "not evaluated"


def host_verdict(report: HostReport, *, strict: bool = False) -> str:
    """Same precedence as the exit status: a FAIL outweighs an ERROR."""
    failing = (Status.FAIL, Status.WARN) if strict else (Status.FAIL,)
    if any(r.status in failing for r in report.results):
        return Verdict.NON_COMPLIANT
    if report.error or report.count(Status.ERROR):
        return Verdict.NOT_EVALUATED
    return Verdict.COMPLIANT
