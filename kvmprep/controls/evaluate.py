"""Judge hosts: facts in, one result per control out (on the controller, no host needed)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kvmprep.controls.catalog import CATALOG
from kvmprep.controls.model import Control, Expect, MissingFact, Result, Status


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


def judge(control: Control, facts: Mapping[str, Any], expect: Expect) -> Result:
    """One control on one host; a judge that cannot decide gives ERROR, never an exception."""
    try:
        return control.judge(facts, expect)
    except MissingFact as exc:
        return Result.error(f"fact {exc} was not gathered")
    except Exception as exc:  # a bug in one judge must not hide the other controls
        return Result.error(f"could not be evaluated: {type(exc).__name__}: {exc}")


def evaluate_host(
    name: str,
    facts: Mapping[str, Any] | None,
    expect: Expect | None = None,
    *,
    error: str | None = None,
    controls: Iterable[Control] = CATALOG,
) -> HostReport:
    """``facts`` is the probe's ``probe`` dict; without it every control is ERROR (``error``)."""
    if facts is None:
        reason = error or "no facts were gathered"
        results = tuple(ControlResult(c, Status.ERROR, reason) for c in controls)
        return HostReport(name, results, error=reason)
    expect = expect or Expect()
    results = []
    for control in controls:
        result = judge(control, facts, expect)
        results.append(ControlResult(control, result.status, result.message))
    return HostReport(name, tuple(results))


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
