"""Live migration inside an OpenNebula cluster: which host can receive VMs from which, and why.

OpenNebula migrates a VM between the hosts of its cluster only, and a VM keeps what it was
started with: its machine type (OS MACHINE, or the emulator's default, made concrete by
libvirt on the host it starts on: ``q35`` becomes ``pc-q35-10.0`` on QEMU 10.0) and its CPU
model. A destination must run both. ``analyse`` judges every cluster of a run once: a
migration matrix (a ``Cell`` per direction) and, per host, the results of FLEET-003 (machine
type, of the VMs to come and of those already running), FLEET-004 (CPU model) and FLEET-005
(versions, for information).

What OpenNebula gives a VM that names neither (``VmmDefaults``) comes from the front-end; when
it is unknown, the machine type is each host's emulator default (what a VM without OS MACHINE
gets) and the CPU model may be host-passthrough (what templates commonly ask for).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from ansible_collections.kvmprep.kvm.plugins.module_utils import machine_types as mt
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import (
    Expect,
    HostFacts,
    MissingFact,
    Result,
    Status,
    VmmDefaults,
    fact,
)
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.opennebula import RESTART

AUTO = "auto"
HOST_CPU_MODES = ("host-passthrough", "host-model")
#: Named x86 CPU models, oldest first within each line (QEMU's target/i386/cpu.c): the newest
#: model every host runs is the one to suggest. Names not listed rank below all of these.
CPU_MODEL_RANK = (
    "486", "pentium", "pentium2", "pentium3", "qemu32", "kvm32", "coreduo", "n270", "athlon",
    "phenom", "core2duo", "qemu64", "kvm64",
    "Denverton", "Snowridge", "SierraForest", "ClearwaterForest",
    "Conroe", "Penryn", "Nehalem", "Westmere", "SandyBridge", "IvyBridge", "Haswell",
    "Broadwell", "Skylake-Client", "Skylake-Server", "Cascadelake-Server", "Cooperlake",
    "Icelake-Server", "SapphireRapids", "GraniteRapids",
    "Opteron_G1", "Opteron_G2", "Opteron_G3", "Opteron_G4", "Opteron_G5", "EPYC",
    "EPYC-Rome", "EPYC-Milan", "EPYC-Genoa", "EPYC-Turin",
    "Dhyana", "YongFeng",
)  # fmt: skip


class Link(StrEnum):
    """Whether a VM started on one host can be live-migrated to another."""

    OK = "ok"
    #: Depends on what the VMs use (host-passthrough on different CPUs), or a VM running on
    #: the source has a machine type the destination lacks.
    AT_RISK = "at risk"
    BLOCKED = "blocked"  # libvirt refuses it
    UNKNOWN = "unknown"  # the facts of one side are missing


#: The worst link decides a cluster's verdict.
SEVERITY = (Link.OK, Link.UNKNOWN, Link.AT_RISK, Link.BLOCKED)


@dataclass(frozen=True)
class Cell:
    """VMs started on ``source`` moving to ``destination``."""

    source: str
    destination: str
    link: Link
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Member:
    """One host of a cluster as the analysis reads it; ``qemu`` is None when not gathered.

    What the cells compare is read once here: a cluster of N hosts has N * (N - 1) cells.
    """

    name: str
    qemu: Mapping[str, Any] | None
    vmm: VmmDefaults
    expect: Expect
    #: The probe's ``domains`` facts (the QEMU domains running here), None when not gathered.
    domains: Mapping[str, Any] | None = None
    machines: Mapping[str, Any] | None = field(init=False)
    #: The machine types and aliases the host runs.
    runs: frozenset[str] = field(init=False)
    cpu_identity: tuple[Any, ...] = field(init=False)

    def __post_init__(self) -> None:
        machines = mt.machines_of(self.qemu)
        names = [*(machines or {}).get("types", ()), *((machines or {}).get("aliases") or {})]
        cpu = self.cpu
        identity = tuple(
            cpu.get(k) for k in ("vendor", "model_name", "family", "model", "stepping")
        )
        object.__setattr__(self, "machines", machines)
        object.__setattr__(self, "runs", frozenset(names))
        object.__setattr__(self, "cpu_identity", identity)

    @property
    def cpu(self) -> Mapping[str, Any]:
        return (self.qemu or {}).get("cpu") or {}

    @property
    def usable_models(self) -> list[str] | None:
        return (self.cpu.get("models") or {}).get("usable")

    @property
    def cpu_name(self) -> str:
        cpu = self.cpu
        return cpu.get("model_name") or cpu.get("vendor") or "an unknown CPU"


@dataclass(frozen=True)
class ClusterMigration:
    """The migration analysis of one cluster, shared by the reports of its hosts."""

    name: str
    hosts: tuple[str, ...]
    #: How the machine type VMs get was decided ("OS MACHINE = q35 (...)", or assumed).
    machine_basis: str
    #: Family -> the newest machine type of it every host runs (pc-i440fx, pc-q35...).
    common_machines: Mapping[str, str]
    #: The OS MACHINE to set (one_frontend_vmm_machine, or computed), None: none fits.
    target_machine: str | None
    #: How the CPU model VMs get was decided.
    cpu_basis: str
    #: The newest named CPU model every host runs, None: none known.
    common_cpu_model: str | None
    cells: tuple[Cell, ...]
    #: (host, QEMU version, libvirt version) of the hosts with qemu facts.
    versions: tuple[tuple[str, str | None, str | None], ...]
    machine_results: Mapping[str, Result]
    cpu_results: Mapping[str, Result]
    version_results: Mapping[str, Result]
    #: The VMs running on the cluster's hosts whose machine type was read.
    running_vms: tuple[RunningVm, ...] = ()
    #: Host -> why its running VMs are not (all) known.
    vms_not_read: Mapping[str, str] = field(default_factory=dict)

    @property
    def stuck_vms(self) -> tuple[RunningVm, ...]:
        """The running VMs that cannot move to some host of the cluster."""
        return tuple(vm for vm in self.running_vms if vm.cannot_go_to)

    def cell(self, source: str, destination: str) -> Cell | None:
        return next(
            (c for c in self.cells if c.source == source and c.destination == destination), None
        )

    @property
    def verdict(self) -> Link:
        links = {c.link for c in self.cells}
        return max(links, key=SEVERITY.index) if links else Link.OK

    def summary(self) -> str:
        """One line: the cluster's verdict and the first thing to do about it."""
        n = len(self.hosts)
        head = f"cluster {self.name} ({n} host{'' if n == 1 else 's'})"
        if not self.cells:
            return f"{head}: no other host to migrate to"
        verdict = self.verdict
        if verdict is Link.OK:
            unread = (
                f" (running VMs not read on {_names(sorted(self.vms_not_read))})"
                if self.vms_not_read
                else ""
            )
            return f"{head}: live migration possible in all {len(self.cells)} directions{unread}"
        bad = [c for c in self.cells if c.link is verdict]
        shown = "; ".join(
            f"{c.source} -> {c.destination} ({', '.join(c.reasons)})" for c in bad[:2]
        )
        more = f" and {len(bad) - 2} more" if len(bad) > 2 else ""
        line = f"{head}: {len(bad)} of {len(self.cells)} directions {verdict}: {shown}{more}"
        if any(c.link is Link.BLOCKED and _machine_reason(c) for c in bad) and self.target_machine:
            line += f"; set OS MACHINE = {self.target_machine}"
        # A VM that cannot move is named even when the worst directions shown are others.
        unnamed = [vm for vm in self.stuck_vms if vm.label not in shown]
        if unnamed:
            line += "; running VMs that cannot move: " + "; ".join(
                f"{vm.label} on {vm.host} ({vm.machine}, not to {_names(vm.cannot_go_to)})"
                for vm in unnamed[:3]
            )
            line += f" and {len(unnamed) - 3} more" if len(unnamed) > 3 else ""
        return line


def _machine_reason(cell: Cell) -> bool:
    return any(r.startswith("machine type") for r in cell.reasons)


def by_cluster(hosts: Sequence[HostFacts]) -> dict[str, list[HostFacts]]:
    """Hosts grouped by their one_frontend_cluster, clusters sorted by name."""
    groups: dict[str, list[HostFacts]] = {}
    for host in hosts:
        groups.setdefault(host.expect.cluster, []).append(host)
    return dict(sorted(groups.items()))


#: The last analysis and the hosts it was made of: the three fleet judges and the reports
#: ask about the same hosts in a row. The hosts are held, so their ids stay theirs.
_last: dict[str, Any] = {}


def _same(these: Sequence[HostFacts], those: Sequence[HostFacts]) -> bool:
    return len(these) == len(those) and all(a is b for a, b in zip(these, those, strict=True))


def analyse(hosts: Sequence[HostFacts]) -> tuple[ClusterMigration, ...]:
    """Every cluster of the run, judged once."""
    if _same(_last.get("hosts", ()), hosts):
        return _last["result"]
    result = tuple(analyse_cluster(name, group) for name, group in by_cluster(hosts).items())
    _last.update(hosts=tuple(hosts), result=result)
    return result


def _member(host: HostFacts) -> Member:
    try:
        qemu = fact(host.facts, "qemu")
    except MissingFact:
        qemu = None
    domains = host.facts.get("domains")
    return Member(
        host.name,
        qemu if isinstance(qemu, Mapping) else None,
        host.vmm,
        host.expect,
        domains if isinstance(domains, Mapping) else None,
    )


def analyse_cluster(name: str, hosts: Sequence[HostFacts]) -> ClusterMigration:
    members = [_member(h) for h in hosts]
    plan = MachinePlan.of(name, members)
    cpu = CpuPlan.of(name, members)
    vms = VmPlan.of(name, members)
    cells = tuple(_cell(plan, cpu, vms, s, d) for s in members for d in members if s.name != d.name)
    return ClusterMigration(
        name=name,
        hosts=tuple(m.name for m in members),
        machine_basis=plan.basis,
        common_machines=plan.common,
        target_machine=plan.target,
        cpu_basis=cpu.basis,
        common_cpu_model=cpu.common,
        cells=cells,
        versions=tuple(
            (m.name, m.qemu.get("version"), m.qemu.get("libvirt_version"))
            for m in members
            if m.qemu is not None
        ),
        machine_results={m.name: vms.result(m, plan.result(m), plan) for m in members},
        cpu_results={m.name: cpu.result(m) for m in members},
        version_results=_version_results(name, members),
        running_vms=vms.vms,
        vms_not_read=vms.not_read,
    )


def _cell(
    plan: MachinePlan, cpu: CpuPlan, vms: VmPlan, source: Member, destination: Member
) -> Cell:
    links = [
        plan.link(source, destination),
        cpu.link(source, destination),
        vms.link(source, destination),
    ]
    worst = max((link for link, _why in links), key=SEVERITY.index)
    reasons = tuple(r for link, why in links if link is not Link.OK for r in why)
    return Cell(source.name, destination.name, worst, reasons)


def _names(names: Sequence[str]) -> str:
    return ", ".join(names)


def _missing_qemu(member: Member) -> Result | None:
    """The result of a host whose QEMU cannot be judged, else None."""
    if member.qemu is None:
        return Result.error("fact qemu was not gathered")
    if not (member.qemu.get("emulator") or {}).get("path"):
        return Result.skip(f"no QEMU emulator ({member.qemu.get('error')}); see PKG-002")
    if member.machines is None:
        return Result.error(f"machine types unknown: {member.qemu.get('error')}")
    return None


# --- FLEET-003: machine type ---------------------------------------------------------------


def _version_key(version: str | None) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in (version or "").split("."))
    except ValueError:
        return ()


@dataclass(frozen=True)
class MachinePlan:
    """Per host, the machine type(s) VMs started there get, and what every host runs."""

    cluster: str
    members: tuple[Member, ...]
    #: Host -> (the machine type asked for, or None: no default to go by).
    asked: Mapping[str, str | None]
    #: Host -> what it resolves to there (empty: the host cannot run it).
    gets: Mapping[str, tuple[str, ...]]
    basis: str
    family: str | None
    common: Mapping[str, str]
    target: str | None
    pinned: str | None

    @classmethod
    def of(cls, cluster: str, members: Sequence[Member]) -> MachinePlan:
        able = [m for m in members if _missing_qemu(m) is None]
        asked = {m.name: m.vmm.machine or (m.machines or {}).get("default") for m in able}
        gets = {
            m.name: mt.resolve(m.machines or {}, asked[m.name]) if asked[m.name] else ()
            for m in able
        }
        newest = max(
            able, key=lambda m: _version_key(m.qemu and m.qemu.get("version")), default=None
        )
        reference = asked.get(newest.name) if newest else None
        family = mt.family(reference, [m.machines or {} for m in able]) if reference else None
        common = mt.newest_common_by_family([m.machines or {} for m in able]) if able else {}
        pinned = _pinned([m.expect.vmm_machine for m in members])
        target = pinned or (common.get(family) if family else None)
        return cls(
            cluster=cluster,
            members=tuple(able),
            asked=asked,
            gets=gets,
            basis=_machine_basis(members),
            family=family,
            common=common,
            target=target,
            pinned=pinned,
        )

    def label(self, member: Member) -> str:
        """Why VMs started on member get what they get."""
        asked = self.asked.get(member.name)
        if not member.vmm.machine:
            return "the emulator's default; check does not know OS MACHINE"
        if asked in self.gets.get(member.name, ()):
            return "OS MACHINE"
        return f"OS MACHINE {asked}"

    def missing(self, source: Member, destination: Member) -> list[str]:
        """What VMs started on source get that destination does not run."""
        return [t for t in self.gets.get(source.name, ()) if t not in destination.runs]

    def link(self, source: Member, destination: Member) -> tuple[Link, tuple[str, ...]]:
        for member in (source, destination):
            problem = _missing_qemu(member)
            if problem is not None:
                return Link.UNKNOWN, (f"machine types of {member.name} unknown",)
        if self.asked.get(source.name) is None:
            return Link.UNKNOWN, (f"no default machine type on {source.name}",)
        if not self.gets[source.name]:
            return Link.BLOCKED, (
                f"machine type {self.asked[source.name]} not run by {source.name}",
            )
        missing = self.missing(source, destination)
        if missing:
            return Link.BLOCKED, (f"machine type {_names(missing)} missing on {destination.name}",)
        return Link.OK, ()

    def result(self, member: Member) -> Result:
        problem = _missing_qemu(member)
        if problem is not None:
            return problem
        asked = self.asked[member.name]
        if asked is None:
            return Result.skip(
                "QEMU here has no default machine type and OS MACHINE is not known: VMs name "
                "their own"
            )
        problems = self._problems(member)
        unread = _not_loaded(member)
        if not problems and not unread:
            return Result.passed(self._fine(member))
        if not problems:
            # The file would do, but VMs get what oned read at start: the type that broke
            # migration, in the usual case of an apply that changed it and no restart since.
            # Not "kvmprep apply with one_frontend_restart_oned": the role restarts oned only
            # when it changes the kvm drivers, not for vmm_exec_kvm.conf.
            return Result.fail(unread, RESTART)
        if unread:
            return Result.fail(
                "; ".join([*problems, unread]) + self._closing(), f"{self.fix()}; then {RESTART}"
            )
        return Result.fail("; ".join(problems) + self._closing(), self.fix())

    def _problems(self, member: Member) -> list[str]:
        others = [m for m in self.members if m.name != member.name]
        problems = []
        if not self.gets[member.name]:
            problems.append(
                f"QEMU {member.qemu.get('version') if member.qemu else '?'} here does not run "
                f"{self.asked[member.name]} ({self.label(member)}): VMs cannot start here"
            )
        incoming: dict[str, list[str]] = {}
        for other in others:
            for machine in self.missing(other, member):
                incoming.setdefault(machine, []).append(other.name)
        for machine, sources in incoming.items():
            problems.append(
                f"lacks {machine}, which VMs started on {_names(sources)} get "
                f"({self.label(self._by_name(sources[0]))}): they cannot migrate here"
            )
        outgoing: dict[str, list[str]] = {}
        for other in others:
            for machine in self.missing(member, other):
                outgoing.setdefault(machine, []).append(other.name)
        for machine, destinations in outgoing.items():
            problems.append(
                f"VMs started here get {machine} ({self.label(member)}), which "
                f"{_names(destinations)} lack{'s' if len(destinations) == 1 else ''}: they "
                "cannot migrate there"
            )
        return problems

    def _by_name(self, name: str) -> Member:
        return next(m for m in self.members if m.name == name)

    def _fine(self, member: Member) -> str:
        gets = _names(self.gets[member.name])
        n = len(self.members)
        if n == 1:
            return (
                f"VMs started here get {gets} ({self.label(member)}); no other host in "
                f"cluster {self.cluster} to migrate to"
            )
        return (
            f"VMs started here get {gets} ({self.label(member)}); all {n} hosts of cluster "
            f"{self.cluster} run what the VMs of the others get"
        )

    def _closing(self) -> str:
        shared = _names(sorted(self.common.values())) or "none"
        return f"; newest machine types every host of cluster {self.cluster} runs: {shared}"

    def fix(self) -> str:
        where = f"for cluster {self.cluster}"
        if self.pinned:
            lacking = [
                m.name for m in self.members if not mt.supports(m.machines or {}, self.pinned)
            ]
            if lacking:
                better = self.common.get(self.family or "") or "a machine type every host runs"
                verb = "does" if len(lacking) == 1 else "do"
                return (
                    f"one_frontend_vmm_machine = {self.pinned}, but {_names(lacking)} {verb} not "
                    f"run it: set it to {better} (or auto), then kvmprep apply with the "
                    f"front-end role sets OS MACHINE in vmm_exec_kvm.conf {where}"
                )
        if self.target is None:
            return (
                f"no {self.family or 'such'} machine type runs on every host of cluster "
                f"{self.cluster}: upgrade QEMU on the oldest hosts, or move them to another cluster"
            )
        setting = f"one_frontend_vmm_machine: {self.pinned or AUTO}"
        return (
            f"kvmprep apply with the front-end role sets OS MACHINE in vmm_exec_kvm.conf to "
            f"{self.target} {where} ({setting}); VMs started before keep their machine type "
            "until they are redeployed"
        )


# --- FLEET-003: the machine types of the VMs already running ---------------------------------


@dataclass(frozen=True)
class RunningVm:
    """A QEMU domain running on ``host`` (kvm_host_probe's ``domains``): it keeps ``machine``
    until it is powered off, whatever OS MACHINE says now."""

    host: str
    domain: str
    vm_id: int | None
    machine: str
    #: The hosts of the cluster whose QEMU does not run ``machine``.
    cannot_go_to: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """OpenNebula's name for it (``VM 12``), else libvirt's (``domain test-vm``)."""
        return f"VM {self.vm_id}" if self.vm_id is not None else f"domain {self.domain}"


def _vm_labels(vms: Sequence[RunningVm], most: int = 5) -> str:
    labels = [vm.label for vm in vms]
    shown = _names(labels[:most])
    return shown + (f" and {len(labels) - most} more" if len(labels) > most else "")


def _running(member: Member) -> tuple[list[tuple[str, int | None, str]], str]:
    """([(domain, VM id, machine type)], why some are not known: "" when all are)."""
    domains = member.domains
    if domains is None:
        return [], "probe without the domains group"
    if domains.get("error"):
        return [], f"{domains.get('path')}: {domains['error']}"
    found, broken = [], []
    for entry in domains.get("running") or ():
        if entry.get("machine"):
            found.append((str(entry.get("name")), entry.get("vm_id"), str(entry["machine"])))
        else:
            broken.append(f"{entry.get('file') or entry.get('name')}: {entry.get('error')}")
    return found, "; ".join(broken)


@dataclass(frozen=True)
class VmPlan:
    """The VMs running in a cluster and the hosts each cannot move to: a VM keeps the machine
    type it started with (``pc-q35-10.0``), whatever OS MACHINE says since."""

    cluster: str
    vms: tuple[RunningVm, ...]
    #: Host -> why its running VMs are not (all) known.
    not_read: Mapping[str, str]
    #: Host -> how many VMs run there (those known).
    counts: Mapping[str, int]

    @classmethod
    def of(cls, cluster: str, members: Sequence[Member]) -> VmPlan:
        able = [m for m in members if _missing_qemu(m) is None]
        vms: list[RunningVm] = []
        not_read: dict[str, str] = {}
        counts: dict[str, int] = {}
        for member in members:
            running, why = _running(member)
            if why:
                not_read[member.name] = why
            counts[member.name] = len(running)
            for domain, vm_id, machine in running:
                # The domain holds the concrete type; a host runs it when it lists it (an
                # alias would do too: compared with what the host runs, aliases included).
                lacking = tuple(
                    o.name for o in able if o.name != member.name and machine not in o.runs
                )
                vms.append(RunningVm(member.name, domain, vm_id, machine, lacking))
        return cls(cluster, tuple(vms), not_read, counts)

    def link(self, source: Member, destination: Member) -> tuple[Link, tuple[str, ...]]:
        stuck = [
            vm for vm in self.vms if vm.host == source.name and destination.name in vm.cannot_go_to
        ]
        if not stuck:
            return Link.OK, ()
        by_machine: dict[str, list[RunningVm]] = {}
        for vm in stuck:
            by_machine.setdefault(vm.machine, []).append(vm)
        return Link.AT_RISK, tuple(
            f"running {_vm_labels(group, 3)} {'has' if len(group) == 1 else 'have'} "
            f"{machine}, missing on {destination.name}"
            for machine, group in by_machine.items()
        )

    def result(self, member: Member, machine: Result, plan: MachinePlan) -> Result:
        """FLEET-003 for member: the result for the VMs to come (``machine``), with what the
        VMs already running say: a PASS becomes a WARN when one of them cannot move."""
        if machine.status not in (Status.PASS, Status.FAIL):
            return machine
        problems = self._problems(member)
        unread = self.not_read.get(member.name)
        note = f"; running VMs here not all known ({unread})" if unread else ""
        if not problems:
            n = self.counts.get(member.name, 0)
            if machine.status is Status.PASS and n and len(plan.members) > 1:
                note = (
                    f"; {n} VM{' runs' if n == 1 else 's run'} here, on machine types every "
                    f"host runs{note}"
                )
            return replace(machine, message=machine.message + note)
        said = "; ".join(problems)
        if machine.status is Status.FAIL:
            return replace(machine, message=f"{machine.message}; {said}{note}")
        return Result.warn(f"{said}; {machine.message}{note}", self.fix(member, plan))

    def _problems(self, member: Member) -> list[str]:
        problems = []
        outgoing: dict[tuple[str, tuple[str, ...]], list[RunningVm]] = {}
        incoming: dict[str, list[RunningVm]] = {}
        for vm in self.vms:
            if vm.host == member.name and vm.cannot_go_to:
                outgoing.setdefault((vm.machine, vm.cannot_go_to), []).append(vm)
            elif member.name in vm.cannot_go_to:
                incoming.setdefault(vm.machine, []).append(vm)
        for (machine, lacking), vms in outgoing.items():
            problems.append(
                f"running {_vm_labels(vms)} ({machine}) cannot live-migrate to "
                f"{_names(lacking)}, whose QEMU lack{'s' if len(lacking) == 1 else ''} "
                f"{machine}"
            )
        for machine, vms in incoming.items():
            hosts = _names(sorted({vm.host for vm in vms}))
            problems.append(
                f"lacks {machine}, which {_vm_labels(vms)} running on {hosts} "
                f"{'has' if len(vms) == 1 else 'have'}: {'it' if len(vms) == 1 else 'they'} "
                "cannot migrate here"
            )
        return problems

    def fix(self, member: Member, plan: MachinePlan) -> str:
        mine = [
            vm for vm in self.vms if vm.cannot_go_to and member.name in (vm.host, *vm.cannot_go_to)
        ]
        ones = [vm for vm in mine if vm.vm_id is not None]
        others = [vm for vm in mine if vm.vm_id is None]
        steps = []
        if ones:
            steps.append(f"{_vm_labels(ones)} (onevm poweroff, then onevm resume)")
        if others:
            steps.append(f"{_vm_labels(others)} (not OpenNebula's: virsh shutdown, virsh start)")
        lacking = _names(sorted({h for vm in mine for h in vm.cannot_go_to}))
        target = plan.target or "a machine type every host runs"
        return (
            "a running VM keeps its machine type until it is powered off and started again: "
            f"once OS MACHINE is {target} (kvmprep apply with the front-end role sets it in "
            "vmm_exec_kvm.conf; a VM whose template names its own OS MACHINE: onevm updateconf "
            f"first), power off and start again {' and '.join(steps)}; or upgrade QEMU on "
            f"{lacking}"
        )


def _not_loaded(member: Member) -> str:
    """What FLEET-003 says when oned has not read the OS MACHINE the judgement used; ""
    when it has (or nobody can tell)."""
    vmm = member.vmm
    if not vmm.not_loaded:
        return ""
    where = vmm.source or "vmm_exec_kvm.conf"
    said = f"OS MACHINE {vmm.machine}" if vmm.machine else "no OS MACHINE"
    return (
        f"{where} says {said}, but that is not what oned uses until it is restarted "
        f"({vmm.not_loaded}): VMs get what it read at start"
    )


def _pinned(values: Sequence[str]) -> str | None:
    """The inventory's machine type or CPU model for the cluster; None when auto or unset."""
    chosen = Counter(v for v in values if v).most_common(1)
    value = chosen[0][0] if chosen else ""
    return None if value in ("", AUTO) else value


def _machine_basis(members: Sequence[Member]) -> str:
    known = {
        (m.vmm.machine, "; ".join(filter(None, (m.vmm.source, m.vmm.not_loaded))))
        for m in members
        if m.vmm.machine
    }
    if not known:
        return (
            "OS MACHINE not known to check (the front-end is not read): each host's "
            "emulator default, what VMs without OS MACHINE get"
        )
    return "; ".join(f"OS MACHINE = {v}" + (f" ({s})" if s else "") for v, s in sorted(known))


# --- FLEET-004: CPU model ------------------------------------------------------------------


def _rank(model: str) -> tuple[int, bool, int, str]:
    """Newer generation first, then an unversioned name (older libvirt knows it), then the
    more specific variant (-IBRS, -noTSX-IBRS: mitigations)."""
    bases = [b for b in CPU_MODEL_RANK if model == b or model.startswith(b + "-")]
    base = max(bases, key=len) if bases else None
    generation = CPU_MODEL_RANK.index(base) if base else -1
    versioned = "-v" in model and model.rsplit("-v", 1)[1].isdigit()
    return generation, not versioned, len(model), model


def common_cpu_model(members: Sequence[Member]) -> str | None:
    """The newest named CPU model libvirt found usable on every host; None when unknown."""
    lists = [m.usable_models for m in members]
    if not lists or any(models is None for models in lists):
        return None
    common = set(lists[0] or ()).intersection(*(set(models or ()) for models in lists[1:]))
    return max(common, key=_rank) if common else None


@dataclass(frozen=True)
class CpuPlan:
    cluster: str
    members: tuple[Member, ...]
    common: str | None
    basis: str
    pinned: str | None

    @classmethod
    def of(cls, cluster: str, members: Sequence[Member]) -> CpuPlan:
        able = tuple(m for m in members if m.qemu is not None)
        return cls(
            cluster=cluster,
            members=able,
            common=common_cpu_model(able),
            basis=_cpu_basis(members),
            pinned=_pinned([m.expect.vmm_cpu_model for m in members]),
        )

    def link(self, source: Member, destination: Member) -> tuple[Link, tuple[str, ...]]:
        if source.qemu is None or destination.qemu is None:
            return Link.UNKNOWN, ("CPU unknown",)
        model = source.vmm.cpu_model
        if model and model not in HOST_CPU_MODES:
            usable = destination.usable_models
            if usable is None:
                return Link.AT_RISK, (f"CPU model {model} on {destination.name} unknown",)
            if model not in usable:
                return Link.BLOCKED, (f"CPU model {model} not usable on {destination.name}",)
            return Link.OK, ()
        if source.cpu_identity != destination.cpu_identity:
            mode = model or "host-passthrough"
            return Link.AT_RISK, (f"different CPU ({mode})",)
        return Link.OK, ()

    def result(self, member: Member) -> Result:
        if member.qemu is None:
            return Result.error("fact qemu was not gathered")
        model = member.vmm.cpu_model
        if model and model not in HOST_CPU_MODES:
            return self._named(member, model)
        return self._host_cpu(member, model)

    def _named(self, member: Member, model: str) -> Result:
        usable = member.usable_models
        if usable is None:
            why = (member.cpu.get("models") or {}).get("error")
            return Result.error(f"cannot tell whether CPU model {model} runs here: {why}")
        if model not in usable:
            return Result.fail(
                f"CPU model {model} (CPU_MODEL) is not usable on {member.cpu_name} here: VMs "
                f"with it cannot start or arrive here; {self._suggestion()}",
                self.fix(),
            )
        return Result.passed(f"CPU model {model} (CPU_MODEL) is usable here")

    def _host_cpu(self, member: Member, model: str | None) -> Result:
        others = [m for m in self.members if m.name != member.name]
        differ = [m for m in others if m.cpu_identity != member.cpu_identity]
        if not differ:
            scope = f"all {len(self.members)} hosts" if others else "the only host"
            return Result.passed(
                f"{member.cpu_name} here, the same CPU on {scope} of cluster {self.cluster}"
            )
        elsewhere = "; ".join(
            f"{name} on {_names([m.name for m in differ if m.cpu_name == name])}"
            for name in sorted({m.cpu_name for m in differ})
        )
        mode = f"CPU_MODEL {model}" if model else "host-passthrough (CPU_MODEL not known to check)"
        flags = _flag_difference(member, differ)
        return Result.warn(
            f"{member.cpu_name} here, {elsewhere}{flags}: VMs with {mode} cannot move between "
            f"different CPUs; {self._suggestion()}",
            self.fix(),
        )

    def _suggestion(self) -> str:
        if self.common:
            return f"a CPU model every host of cluster {self.cluster} runs: {self.common}"
        unknown = [m.name for m in self.members if m.usable_models is None]
        if unknown:
            return f"the CPU models usable on {_names(unknown)} are unknown (libvirt's cache)"
        return f"no named CPU model runs on every host of cluster {self.cluster}"

    def fix(self) -> str:
        model = self.pinned if self.pinned and self.pinned != AUTO else self.common
        if model is None:
            return (
                "choose a CPU model every host runs (virsh domcapabilities, mode custom, "
                "usable='yes'), then set one_frontend_vmm_cpu_model to it and run kvmprep "
                "apply with the front-end role"
            )
        sets = (
            f'sets CPU_MODEL = [ MODEL = "{model}" ] in vmm_exec_kvm.conf for cluster '
            f"{self.cluster}"
        )
        if self.pinned:
            return f"kvmprep apply with the front-end role {sets} (one_frontend_vmm_cpu_model)"
        # The front-end leaves CPU_MODEL alone unless asked: a CPU model is a policy choice.
        return (
            f"set one_frontend_vmm_cpu_model: auto (or {model}); kvmprep apply with the "
            f"front-end role then {sets}"
        )


def _flag_difference(member: Member, differ: Sequence[Member]) -> str:
    """ ", kvm13 has avx512f, avx512bw (+10) that this one lacks" for the first other host."""
    mine = set(member.cpu.get("flags") or ())
    other = differ[0]
    extra = sorted(set(other.cpu.get("flags") or ()) - mine)
    if not mine or not extra:
        return ""
    shown = _names(extra[:4]) + (f" (+{len(extra) - 4})" if len(extra) > 4 else "")
    return f" ({other.name} has {shown} that this CPU lacks)"


def _cpu_basis(members: Sequence[Member]) -> str:
    known = {(m.vmm.cpu_model, m.vmm.source) for m in members if m.vmm.cpu_model}
    if not known:
        return "CPU_MODEL not known to check: VMs may use host-passthrough"
    return "; ".join(f"CPU_MODEL = {v}" + (f" ({s})" if s else "") for v, s in sorted(known))


# --- FLEET-005: versions -------------------------------------------------------------------


def _spread(label: str, values: Mapping[str, str | None]) -> str:
    by_version: dict[str, list[str]] = {}
    for name, version in values.items():
        by_version.setdefault(version or "unknown", []).append(name)
    ordered = sorted(by_version, key=_version_key)
    if len(ordered) == 1:
        n = len(values)
        return f"{label} {ordered[0]} on all {n} host{'' if n == 1 else 's'}"
    return f"{label} " + ", ".join(f"{v} ({_names(by_version[v])})" for v in ordered)


def _version_results(cluster: str, members: Sequence[Member]) -> dict[str, Result]:
    able = [m for m in members if m.qemu is not None]
    qemu = _spread("QEMU", {m.name: m.qemu.get("version") for m in able if m.qemu})
    libvirt = _spread("libvirt", {m.name: m.qemu.get("libvirt_version") for m in able if m.qemu})
    results: dict[str, Result] = {}
    for m in members:
        if m.qemu is None:
            results[m.name] = Result.error("fact qemu was not gathered")
            continue
        mine = (m.qemu.get(k) or "unknown" for k in ("version", "libvirt_version"))
        here = "QEMU {}, libvirt {} here".format(*mine)
        results[m.name] = Result.passed(f"{here}; cluster {cluster}: {qemu}; {libvirt}")
    return results
