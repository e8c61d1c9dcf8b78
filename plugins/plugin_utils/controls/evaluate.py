"""Judge hosts: facts in, one result per control out (on the controller, no host needed).

Host controls see one host's facts; fleet controls see every evaluated host at once and give
each its own result, so a fleet control is reported per host like any other. Each host's
report also carries the migration analysis of its OpenNebula cluster (``cluster``), which the
reports show as one verdict and one migration matrix per cluster.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls import migration
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.catalog import CATALOG
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.migration import ClusterMigration
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import (
    Control,
    Expect,
    HostFacts,
    MissingFact,
    Result,
    Role,
    Status,
    VmmDefaults,
)


@dataclass(frozen=True)
class ControlResult:
    control: Control
    status: Status
    message: str
    #: The remediation made concrete for this host by the judge; empty: the catalog's.
    fix: str = ""

    @property
    def remediation(self) -> str:
        return self.fix or self.control.remediation


@dataclass(frozen=True)
class HostReport:
    name: str
    results: tuple[ControlResult, ...]
    #: Why the host could not be evaluated at all (unreachable, probe failed), else None.
    error: str | None = None
    #: The migration analysis of the host's cluster (shared by its hosts); None when the host
    #: has no facts (its cluster is not known then) or none gathered the qemu facts.
    cluster: ClusterMigration | None = None
    role: Role = Role.KVM_HOST

    def count(self, status: Status) -> int:
        return sum(1 for r in self.results if r.status is status)


@dataclass(frozen=True)
class HostInput:
    """What a run gathered for one host: its facts, or why there are none."""

    name: str
    facts: Mapping[str, Any] | None
    expect: Expect | None = None
    error: str | None = None
    #: OpenNebula's effective VM defaults for the host, when known (from the front-end).
    vmm: VmmDefaults | None = None
    role: Role = Role.KVM_HOST


def _unexpected(exc: Exception) -> Result:
    if isinstance(exc, MissingFact):
        return Result.error(f"fact {exc} was not gathered")
    return Result.error(f"could not be evaluated: {type(exc).__name__}: {exc}")


def judge(control: Control, facts: Mapping[str, Any], expect: Expect) -> Result:
    """One control on one host; a judge that cannot decide gives ERROR, never an exception."""
    if control.judge is None:
        raise AssertionError(f"{control.id} is a fleet control")
    try:
        return control.judge(facts, expect)
    except Exception as exc:  # a bug in one judge must not hide the other controls
        return _unexpected(exc)


def judge_fleet(control: Control, hosts: Sequence[HostFacts]) -> dict[str, Result]:
    """One fleet control over every evaluated host; a host it does not judge gets ERROR."""
    if control.fleet_judge is None:
        raise AssertionError(f"{control.id} is a host control")
    try:
        results = dict(control.fleet_judge(hosts))
    except Exception as exc:
        return {h.name: _unexpected(exc) for h in hosts}
    missing = Result.error("not judged by the fleet control")
    return {h.name: results.get(h.name, missing) for h in hosts if h.role in control.applies_to}


def _sees(control: Control, machine: HostFacts) -> bool:
    return machine.role in control.applies_to or (
        control.sees_frontend and machine.role is Role.FRONTEND
    )


def evaluate_fleet(
    hosts: Sequence[HostInput], *, controls: Iterable[Control] = CATALOG
) -> tuple[HostReport, ...]:
    """Every control for every machine, in the order given; each machine gets the controls
    that apply to its role (a KVM host's, or the front-end's). Fleet controls compare the
    machines that have facts (one without facts has every control as ERROR, ``error`` the
    reason); a front-end without facts is still shown to the judges that read it."""
    controls = tuple(controls)
    evaluated = [
        HostFacts(h.name, h.facts, h.expect or Expect(), h.vmm or VmmDefaults(), h.role)
        for h in hosts
        if h.facts is not None
    ]
    unprobed = [
        HostFacts(h.name, {}, h.expect or Expect(), role=h.role, error=h.error or "no facts")
        for h in hosts
        if h.facts is None and h.role is Role.FRONTEND
    ]
    fleet = {
        c.id: judge_fleet(
            c, [m for m in evaluated if _sees(c, m)] + [m for m in unprobed if _sees(c, m)]
        )
        for c in controls
        if c.fleet_judge is not None
    }
    clusters = _clusters([m for m in evaluated if m.role is Role.KVM_HOST])
    reports = []
    for host in hosts:
        mine = tuple(c for c in controls if host.role in c.applies_to)
        if host.facts is None:
            reason = host.error or "no facts were gathered"
            results = tuple(ControlResult(c, Status.ERROR, reason) for c in mine)
            reports.append(HostReport(host.name, results, error=reason, role=host.role))
            continue
        expect = host.expect or Expect()
        row = []
        for control in mine:
            result = (
                fleet[control.id][host.name]
                if control.id in fleet
                else judge(control, host.facts, expect)
            )
            row.append(ControlResult(control, result.status, result.message, result.fix))
        reports.append(
            HostReport(host.name, tuple(row), cluster=clusters.get(host.name), role=host.role)
        )
    return tuple(reports)


def _clusters(hosts: Sequence[HostFacts]) -> dict[str, ClusterMigration]:
    """Host name -> the analysis of its cluster, when any host gathered the qemu facts."""
    if not any("qemu" in h.facts for h in hosts):
        return {}
    try:
        analyses = migration.analyse(hosts)
    except Exception:  # the fleet controls already report the error per host
        return {}
    return {name: c for c in analyses for name in c.hosts}


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


def clusters_of(reports: Sequence[HostReport]) -> tuple[ClusterMigration, ...]:
    """The clusters of the reports' hosts, each once, by name."""
    found = {r.cluster.name: r.cluster for r in reports if r.cluster is not None}
    return tuple(found[name] for name in sorted(found))


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
