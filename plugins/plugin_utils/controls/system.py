"""SYS-001, FLEET-006, FLEET-007: what the hosts of a cluster must share below QEMU.

The facts come from kvm_host_probe's ``system`` group: the clock's synchronisation as
timedatectl (else chrony, ntpd, the kernel's adjtimex flag) reports it, the cgroup layout of
/sys/fs/cgroup, the kernel release and the first CPU's microcode revision. Live migration
between hosts of different cgroup versions fails (OpenNebula's platform notes: "cpu.weight:
Numerical result out of range"); kernel and microcode drift and unsynchronised clocks are the
cluster hygiene OpenNebula's cluster guide, Proxmox's pve8to9 and kolla-ansible's prechecks
warn about.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.migration import by_cluster
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import (
    Expect,
    HostFacts,
    MissingFact,
    Result,
    Role,
    fact,
)

CLOCK_FIX = (
    "run a time daemon that keeps the clock in step: `systemctl enable --now "
    "systemd-timesyncd` (or chrony: `apt-get install chrony`), with an NTP server the host "
    "reaches; in a container, synchronise the machine that runs it"
)
CGROUP_FIX = (
    "boot every host of the cluster with the same cgroup layout (cgroup v2: the kernel argument "
    "systemd.unified_cgroup_hierarchy=1, the default of current distributions; v1: "
    "systemd.unified_cgroup_hierarchy=0), or put the hosts of each layout in their own "
    "OpenNebula cluster"
)
DRIFT_FIX = (
    "upgrade the odd hosts to the kernel and microcode (intel-microcode/amd64-microcode "
    "package, or firmware) the others run and reboot them, one at a time, migrating their VMs "
    "away first"
)


def _names(names: Sequence[str]) -> str:
    return ", ".join(sorted(names))


# --- SYS-001 -------------------------------------------------------------------------------


def clock(facts: Mapping[str, Any], expect: Expect) -> Result:
    """SYS-001. An unsynchronised clock breaks TLS, Kerberos and log correlation, and makes a
    migrated VM's clock jump."""
    state = fact(facts, "system", "clock")
    detail = state.get("detail") or ""
    container = fact(facts, "system").get("container")
    where = f" (a {container} container: the clock is the machine's that runs it)"
    where = where if container else ""
    if state.get("synchronized") is True:
        return Result.passed(f"synchronised ({detail})")
    if state.get("synchronized") is False:
        return Result.warn(f"the clock is not synchronised{where}: {detail}", CLOCK_FIX)
    return Result.warn(f"cannot tell whether the clock is synchronised{where}: {detail}", CLOCK_FIX)


# --- FLEET-006 and FLEET-007: per cluster -----------------------------------------------------


def _read_all(
    hosts: Sequence[HostFacts], read: Callable[[Mapping[str, Any]], Any]
) -> tuple[dict[str, Any], dict[str, Result]]:
    values: dict[str, Any] = {}
    settled: dict[str, Result] = {}
    for host in hosts:
        try:
            value = read(host.facts)
        except MissingFact as exc:
            value = Result.error(f"fact {exc} was not gathered")
        if isinstance(value, Result):
            settled[host.name] = value
        else:
            values[host.name] = value
    return values, settled


def _cgroup(facts: Mapping[str, Any]) -> Any:
    cgroup = fact(facts, "system", "cgroup")
    if cgroup.get("version") not in (1, 2):
        return Result.error(f"cgroup version unknown: {cgroup.get('error')}")
    layout = cgroup.get("layout")
    return f"cgroup v{cgroup['version']}" + (f" ({layout})" if layout else "")


def cgroup_version(hosts: Sequence[HostFacts]) -> dict[str, Result]:
    """FLEET-006. A VM started under one cgroup version does not migrate to a host of the
    other: both directions fail, every host of a mixed cluster FAILs, naming the others."""
    results: dict[str, Result] = {}
    for cluster, members in by_cluster([h for h in hosts if h.role is Role.KVM_HOST]).items():
        values, settled = _read_all(members, _cgroup)
        results.update(settled)
        versions = {v.split(" ")[1] for v in values.values()}
        for name, value in values.items():
            if len(versions) <= 1:
                results[name] = Result.passed(
                    f"{value} like all {len(values)} host(s) of cluster {cluster}"
                )
                continue
            mine = value.split(" ")[1]
            others = {n: v for n, v in values.items() if v.split(" ")[1] != mine}
            shown = "; ".join(
                f"{v} on {_names([n for n in others if others[n] == v])}"
                for v in sorted(set(others.values()))
            )
            results[name] = Result.fail(
                f"{value} here, {shown} in cluster {cluster}: live migration between them "
                'fails ("cpu.weight: Numerical result out of range")',
                CGROUP_FIX,
            )
    return results


def _kernel(facts: Mapping[str, Any]) -> Any:
    system = fact(facts, "system")
    return str(fact(system, "kernel", "release")), system.get("microcode")


def _majority(values: Mapping[str, Any]) -> Any:
    """The value most hosts have, None on a tie (no host is then the odd one)."""
    ranked = Counter(values.values()).most_common()
    if not ranked or (len(ranked) > 1 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


def _compare(what: str, values: Mapping[str, str], name: str) -> tuple[str, bool] | None:
    """(message, odd) for one host's value among the cluster's; None when all agree."""
    if name not in values or len(set(values.values())) <= 1:
        return None
    mine = values[name]
    reference = _majority(values)
    others = {n: v for n, v in values.items() if v != mine}
    shown = "; ".join(
        f"{v} on {_names([n for n in others if others[n] == v])}"
        for v in sorted(set(others.values()))
    )
    return f"{what} {mine} here, {shown}", reference != mine


def kernel_microcode(hosts: Sequence[HostFacts]) -> dict[str, Result]:
    """FLEET-007. Hosts of a cluster on different kernels or microcode migrate with surprises
    (CPU flags, bugs, timing): the hosts off the majority WARN, naming what the others run."""
    results: dict[str, Result] = {}
    for cluster, members in by_cluster([h for h in hosts if h.role is Role.KVM_HOST]).items():
        values, settled = _read_all(members, _kernel)
        results.update(settled)
        kernels = {n: v[0] for n, v in values.items()}
        microcode = {n: v[1] for n, v in values.items() if v[1]}
        unknown = sorted(n for n, v in values.items() if not v[1])
        for name, (release, code) in values.items():
            found = [
                c
                for c in (
                    _compare("kernel", kernels, name),
                    _compare("microcode", microcode, name),
                )
                if c is not None
            ]
            if found:
                message = "; ".join(m for m, _odd in found) + f" (cluster {cluster})"
                if any(odd for _m, odd in found):
                    results[name] = Result.warn(message, DRIFT_FIX)
                else:
                    results[name] = Result.passed(f"like most hosts: {message}")
                continue
            note = f"; microcode unknown on {_names(unknown)}" if unknown else ""
            results[name] = Result.passed(
                f"kernel {release}, microcode {code or 'unknown'}, like all {len(values)} "
                f"host(s) of cluster {cluster}{note}"
            )
    return results
