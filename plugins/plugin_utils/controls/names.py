"""NET-001: names resolve both ways between the front-end and the hosts.

OpenNebula reaches a host by the name it knows it by (``one_frontend_host_name``, else the
inventory name): the front-end monitors and deploys through it, and the hosts of a cluster
migrate to each other through it. That name must resolve, on the front-end and on every other
host of the host's cluster, to an address of that host that is not loopback; and the
front-end's name must resolve on every host to an address of the front-end.

The facts: each machine's probe resolves the names it was given (kvm_host_probe ``names``,
one_frontend_probe ``names``: getaddrinfo's addresses, or its error) and reports its own
non-loopback addresses (``one.ssh.addresses``, the front-end's ``ssh.addresses``). Hosts of
separate clusters need not resolve each other; the front-end must resolve them all.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import (
    HostFacts,
    MissingFact,
    Result,
    Role,
    Status,
    fact,
)
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.opennebula import (
    frontend_of,
    kvm_hosts,
    one_name,
)

HOW = (
    "DNS, or the same /etc/hosts entries on every machine (kvmprep apply with "
    "one_frontend_manage_etc_hosts: true writes them)"
)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(str(text).split("%", maxsplit=1)[0])
    except ValueError:
        return None


@dataclass
class _Machine:
    """A machine as NET-001 sees it: the name others use, its addresses, what it resolved."""

    label: str  # the report's row
    name: str  # the name the others resolve
    addresses: list[str]
    resolved: Mapping[str, Any] | None  # its ``names`` fact; None: not gathered
    cluster: str | None = None  # None: the front-end (it must resolve every host)
    own: set[Any] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.own = {a for a in map(_address, self.addresses) if a is not None}


def _machine(host: HostFacts, name: str) -> _Machine:
    if host.role is Role.KVM_HOST:
        addresses = fact(host.facts, "one", "ssh", "addresses")
        cluster: str | None = host.expect.cluster
    else:
        addresses = fact(host.facts, "ssh", "addresses")
        cluster = None
    resolved = host.facts.get("names")
    return _Machine(
        host.name,
        name,
        list(addresses or []),
        resolved if isinstance(resolved, Mapping) else None,
        cluster,
    )


def lookup(where: _Machine, target: _Machine) -> tuple[str, str]:
    """How ``target``'s name resolves on ``where``: ("ok" | "warn" | "fail" | "unknown", why)."""
    name, on = target.name, where.label
    if where.resolved is None:
        return "unknown", f"{on}'s probe did not resolve names (fact names was not gathered)"
    entry = where.resolved.get(name)
    if not isinstance(entry, Mapping):
        return "unknown", f"{on} was not asked to resolve {name}"
    if entry.get("error"):
        return "fail", f"{name} does not resolve on {on} ({entry['error']})"
    found = [str(a) for a in entry.get("addresses") or []]
    if not found:
        return "fail", f"{name} resolves to no address on {on}"
    shown = ", ".join(found)
    parsed = [_address(a) for a in found]
    if any(a is not None and a.is_loopback for a in parsed):
        loop = ", ".join(a for a, p in zip(found, parsed, strict=True) if p and p.is_loopback)
        return "fail", f"{name} resolves to loopback on {on} ({loop}; all: {shown})"
    if not target.own:
        return "unknown", f"{target.label} reports no address to compare {name} with"
    mine = [a for a, p in zip(found, parsed, strict=True) if p in target.own]
    theirs = ", ".join(target.addresses)
    if not mine:
        return "fail", (
            f"{name} resolves on {on} to {shown}, not an address of {target.label} ({theirs})"
        )
    others = [a for a in found if a not in mine]
    if others:
        return "warn", (
            f"{name} resolves on {on} to {shown}: {', '.join(others)} is not {target.label}'s "
            f"({theirs}), and a connection may try it first"
        )
    return "ok", ""


def _verdict(target: _Machine, checked: Sequence[_Machine], what: str) -> Result:
    """One machine's result from the lookups of its name on the ``checked`` machines."""
    if not checked:
        return Result.skip(what)
    found = [lookup(where, target) for where in checked]
    fails = [why for state, why in found if state == "fail"]
    warns = [why for state, why in found if state == "warn"]
    unknown = [why for state, why in found if state == "unknown"]
    wrong = [w.label for w, (state, _why) in zip(checked, found, strict=True) if state != "ok"]
    fix = (
        f"make {target.name} resolve to {', '.join(target.addresses) or 'its address'} on "
        f"{', '.join(wrong)}: {HOW}"
    )
    if fails:
        return Result.fail(f"{len(fails)} problem(s): " + "; ".join(fails + warns + unknown), fix)
    if unknown:
        return Result.error("; ".join(unknown + warns))
    if warns:
        return Result.warn("; ".join(warns), fix)
    shown = ", ".join(w.label for w in checked)
    return Result.passed(f"{target.name} resolves to an address of {target.label} on {shown}")


def resolution(hosts: Sequence[HostFacts]) -> dict[str, Result]:
    """NET-001. Each host's OpenNebula name resolves on the front-end and on every other host
    of its cluster to an address of that host that is not loopback; the front-end's name on
    every host to one of the front-end's."""
    fe = frontend_of(hosts)
    nodes = kvm_hosts(hosts)
    fe_name = next((h.expect.frontend for h in nodes if h.expect.frontend), None)
    results: dict[str, Result] = {}
    machines: dict[str, _Machine] = {}
    for host in nodes:
        try:
            machines[host.name] = _machine(host, one_name(host))
        except MissingFact as exc:
            results[host.name] = Result.error(f"fact {exc} was not gathered")
    front: _Machine | None = None
    fe_problem = ""
    if fe is not None and fe.error:
        fe_problem = f"front-end {fe.name} was not probed: {fe.error}"
    elif fe is not None:
        try:
            front = _machine(fe, fe_name or fe.name)
        except MissingFact as exc:
            fe_problem = f"front-end {fe.name}: fact {exc} was not gathered"
            results[fe.name] = Result.error(f"fact {exc} was not gathered")
    for label, target in machines.items():
        mates = [m for m in machines.values() if m is not target and m.cluster == target.cluster]
        checked = ([front] if front else []) + mates
        result = _verdict(
            target,
            checked,
            f"no other host in cluster {target.cluster} and no front-end: nothing resolves "
            f"{target.name}",
        )
        if fe_problem and result.status is not Status.FAIL:
            # What the front-end resolves is unknown: no PASS without it.
            result = Result.error(f"{fe_problem}; {result.message}".rstrip("; "))
        results[label] = result
    if front is not None:
        results[front.label] = _verdict(
            front, list(machines.values()), "no kvm host was evaluated to resolve it"
        )
    return results
