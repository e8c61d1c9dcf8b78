"""Machine types: which ones a host's QEMU runs, what an alias gives, which all hosts share.

A VM keeps the machine type it was started with (libvirt turns ``q35`` into the concrete
``pc-q35-10.0`` of the host it starts on), and a host can only receive a VM whose machine type
its own QEMU has: a cluster is only as migratable as the machine types all its hosts share.

Standard library only: the collection's filter plugin (one_frontend) imports this module to
compute OS MACHINE (``common_machine_type``), and kvmprep check's fleet controls import it from
the collection to judge with it: apply sets what check asks for.
A host is given as the ``qemu`` facts of kvm_host_probe, the whole probe result, or the
``machines`` mapping itself (``types``, ``default``, ``aliases``, ``deprecated``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

# "pc-q35-10.0", "pc-i440fx-4.0.1", "virt-9.2", "pseries-8.2", "pc-q35-rhel9.4.0"
_VERSIONED = re.compile(r"^(?P<family>.+?-(?:rhel)?)(?P<version>\d+(?:\.\d+)+)$")
#: The families of QEMU's x86 aliases, for hosts whose facts list no aliases.
ALIAS_FAMILIES = {"q35": "pc-q35", "pc": "pc-i440fx"}


def machines_of(host: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The ``machines`` mapping of a host, or None when its QEMU could not be asked."""
    if not isinstance(host, Mapping):
        return None
    if "types" in host:
        return host
    if "qemu" in host:
        return machines_of(host["qemu"])
    machines = host.get("machines")
    return machines if isinstance(machines, Mapping) else None


def versioned(name: str) -> tuple[str, tuple[int, ...]] | None:
    """("pc-q35", (10, 0)) for "pc-q35-10.0"; None for a name without a release number (an
    alias, or a distribution's own type such as Ubuntu's pc-q35-noble)."""
    m = _VERSIONED.match(name)
    if m is None:
        return None
    return m.group("family").rstrip("-"), tuple(int(p) for p in m.group("version").split("."))


def resolve(machines: Mapping[str, Any], name: str) -> tuple[str, ...]:
    """The machine types a VM asking for ``name`` may get on this host; () when it has none.

    An alias listed twice (Ubuntu 24.04's q35: pc-q35-noble and pc-q35-8.2) may give either.
    """
    targets = (machines.get("aliases") or {}).get(name)
    if targets:
        return tuple(targets)
    return (name,) if name in (machines.get("types") or ()) else ()


def supports(machines: Mapping[str, Any], name: str) -> bool:
    return bool(resolve(machines, name))


def family(name: str, hosts: Iterable[Mapping[str, Any]] = ()) -> str | None:
    """The family of a machine type ("pc-q35" for q35, pc-q35-7.2 or pc-q35-noble), learnt from
    the name, else from what it resolves to on the hosts, else from their versioned types."""
    found = versioned(name)
    if found is not None:
        return found[0]
    all_machines = [m for m in (machines_of(h) for h in hosts) if m is not None]
    for machines in all_machines:
        for target in resolve(machines, name):
            if target != name:
                return family(target, all_machines)
    known = {f for m in all_machines for f, _v in _versioned_types(m)}
    prefixes = sorted((f for f in known if name.startswith(f + "-")), key=len, reverse=True)
    return prefixes[0] if prefixes else ALIAS_FAMILIES.get(name)


def _versioned_types(machines: Mapping[str, Any]) -> list[tuple[str, tuple[int, ...]]]:
    return [v for v in (versioned(t) for t in machines.get("types") or ()) if v is not None]


def newest(machines: Mapping[str, Any], family_name: str) -> str | None:
    """The newest versioned machine type of a family that this host runs."""
    return _newest_of(machines.get("types") or (), family_name)


def _newest_of(types: Iterable[str], family_name: str) -> str | None:
    best: tuple[tuple[int, ...], str] | None = None
    for name in types:
        found = versioned(name)
        if found is not None and found[0] == family_name and (best is None or found[1] > best[0]):
            best = (found[1], name)
    return best[1] if best else None


def common_types(hosts: Iterable[Mapping[str, Any]]) -> set[str] | None:
    """The machine types every host runs; None when a host's are unknown (or no host)."""
    common: set[str] | None = None
    for host in hosts:
        machines = machines_of(host)
        if machines is None:
            return None
        types = set(machines.get("types") or ())
        common = types if common is None else common & types
    return common


def common_machine_type(hosts: Iterable[Mapping[str, Any]], like: str = "q35") -> str | None:
    """The newest machine type of ``like``'s family that every host runs, or None.

    ``like`` is an alias ("q35", "pc"), a family ("pc-q35") or a machine type of the family
    ("pc-q35-10.0", "pc-q35-noble"). Only types with a release number are candidates: they
    mean the same on every distribution (Ubuntu's pc-q35-noble exists on Ubuntu alone). None
    when a host's machine types are unknown, or no such type runs everywhere.
    """
    hosts = list(hosts)
    common = common_types(hosts)
    if not common:
        return None
    family_name = family(like, hosts) or like
    return _newest_of(common, family_name)


def newest_common_by_family(hosts: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """{family: its newest machine type every host runs}, e.g. pc-i440fx and pc-q35 alike."""
    common = common_types(list(hosts)) or set()
    families = sorted({v[0] for v in (versioned(t) for t in common) if v is not None})
    return {f: n for f in families if (n := _newest_of(common, f)) is not None}
