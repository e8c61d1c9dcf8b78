"""Judges of the fleet controls: what must be unique, or identical, across hosts.

FLEET-001/002 first read one value per host (a host whose value cannot be had gets its own
ERROR or SKIP), then compare the values: the hosts that clash FAIL, naming the others.
FLEET-003..005 compare the hosts of each OpenNebula cluster (``migration``): VMs migrate
inside a cluster only.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls import migration
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.migration import ClusterMigration
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import (
    Expect,
    HostFacts,
    MissingFact,
    Result,
    fact,
)

_HEX32 = re.compile(r"[0-9a-f]{32}")


def _per_host(
    hosts: Sequence[HostFacts], read: Callable[[Mapping[str, Any], Expect], Any]
) -> tuple[dict[str, Any], dict[str, Result]]:
    """(values, results): ``read`` returns a value, or a Result that settles that host."""
    values: dict[str, Any] = {}
    settled: dict[str, Result] = {}
    for host in hosts:
        try:
            value = read(host.facts, host.expect)
        except MissingFact as exc:
            value = Result.error(f"fact {exc} was not gathered")
        if isinstance(value, Result):
            settled[host.name] = value
        else:
            values[host.name] = value
    return values, settled


def _names(names: Sequence[str]) -> str:
    return ", ".join(sorted(names))


# --- FLEET-001 -----------------------------------------------------------------------------


def normalize_uuid(text: str | None) -> str | None:
    """A UUID as 32 lower-case hex digits (libvirt's virUUIDParse ignores dashes), or None."""
    digits = (text or "").strip().replace("-", "").lower()
    return digits if _HEX32.fullmatch(digits) else None


def _valid_host_uuid(digits: str) -> bool:
    # libvirt's virUUIDIsValid: a UUID whose bytes are all equal (all zeros...) is rejected.
    return len(set(re.findall("..", digits))) > 1


def effective_host_uuid(facts: Mapping[str, Any], expect: Expect) -> tuple[str, str] | Result:
    """(uuid, where it comes from) as libvirt decides it (daemonSetupHostUUID, virSetHostUUIDStr):
    ``host_uuid`` in the daemon's config; else ``host_uuid_source = "machine-id"``:
    /etc/machine-id; else (``"smbios"``, the default) the SMBIOS product_uuid; when that cannot
    be read, a random UUID at every daemon start."""
    layout = fact(facts, "libvirt", "layout")
    if layout == "none":
        return Result.skip("no libvirt daemon installed")
    entry = fact(facts, "config", "virtqemud.conf" if layout == "modular" else "libvirtd.conf")
    if entry.get("exists") and entry.get("keys") is None:
        return Result.error(f"cannot read {entry['path']}: {entry.get('error')}")
    keys = entry.get("keys") or {}
    where = entry["path"]
    if "host_uuid" in keys:
        digits = normalize_uuid(str(keys["host_uuid"]))
        if digits is None or not _valid_host_uuid(digits):
            return Result.fail(
                f"host_uuid {keys['host_uuid']!r} in {where} is invalid: libvirt will not start"
            )
        return digits, f"host_uuid in {where}"
    source = keys.get("host_uuid_source", "smbios")
    identity = fact(facts, "identity")
    if source == "machine-id":
        machine_id = identity["machine_id"]
        digits = normalize_uuid(machine_id.get("value"))
        if digits is None:
            why = machine_id.get("error") or "not a UUID"
            return Result.fail(f'host_uuid_source = "machine-id" but {machine_id["path"]}: {why}')
        return digits, machine_id["path"]
    if source != "smbios":
        return Result.fail(f"host_uuid_source = {source!r} in {where}: libvirt will not start")
    for dmi in identity["dmi"]:
        if dmi.get("value") is not None:
            digits = normalize_uuid(dmi["value"])
            if digits is not None:
                return digits, f"SMBIOS ({dmi['path']})"
            break
        if dmi.get("error") not in (None, "No such file or directory"):
            return Result.error(f"cannot read {dmi['path']}: {dmi['error']}")
    return Result.passed(
        "no SMBIOS UUID: libvirt makes up a random host UUID at every start (unique, not "
        "stable); set host_uuid to keep one"
    )


def _format_uuid(digits: str) -> str:
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def unique_host_uuid(hosts: Sequence[HostFacts]) -> dict[str, Result]:
    """FLEET-001. libvirt refuses to migrate between hosts that report the same host UUID."""
    values, results = _per_host(hosts, effective_host_uuid)
    by_uuid: defaultdict[str, list[str]] = defaultdict(list)
    for name, (digits, _where) in values.items():
        by_uuid[digits].append(name)
    for name, (digits, where) in values.items():
        others = [n for n in by_uuid[digits] if n != name]
        shown = f"{_format_uuid(digits)} (from {where})"
        if others:
            results[name] = Result.fail(
                f"host UUID {shown} is also the host UUID of {_names(others)}: libvirt refuses "
                "to migrate between them"
            )
        else:
            results[name] = Result.passed(f"host UUID {shown}, unique among {len(hosts)} host(s)")
    return results


# --- FLEET-002 -----------------------------------------------------------------------------


def _oneadmin_ids(facts: Mapping[str, Any], expect: Expect) -> tuple[int, int] | Result:
    user = fact(facts, "accounts", "user")
    if user is None:
        return Result.skip(f"user {expect.oneadmin_user} does not exist (USR-001)")
    return int(user["uid"]), int(user["gid"])


def _reference(values: Mapping[str, Hashable], expected: set[Hashable]) -> Hashable | None:
    """The value most hosts have; a tie goes to the inventory's value, else there is none."""
    ranked = Counter(values.values()).most_common()
    top = [value for value, count in ranked if count == ranked[0][1]]
    if len(top) == 1:
        return top[0]
    preferred = [value for value in top if value in expected]
    return preferred[0] if len(preferred) == 1 else None


def same_oneadmin_ids(hosts: Sequence[HostFacts]) -> dict[str, Result]:
    """FLEET-002. Shared datastores and migrated VMs' files carry numeric ids."""
    values, results = _per_host(hosts, _oneadmin_ids)
    expected: set[Hashable] = {(h.expect.oneadmin_uid, h.expect.oneadmin_gid) for h in hosts}
    reference = _reference(values, expected)

    def shown(ids: Hashable) -> str:
        uid, gid = ids  # type: ignore[misc]
        return f"uid/gid {uid}/{gid}"

    for name, ids in values.items():
        differ = {n: v for n, v in values.items() if v != ids}
        if not differ:
            results[name] = Result.passed(f"{shown(ids)} on all {len(values)} host(s)")
            continue
        elsewhere = "; ".join(
            f"{shown(v)} on {_names([n for n in differ if differ[n] == v])}"
            for v in sorted(set(differ.values()))  # type: ignore[type-var]
        )
        if ids == reference:
            results[name] = Result.passed(f"{shown(ids)} like most hosts ({elsewhere})")
        else:
            results[name] = Result.fail(f"{shown(ids)} here, {elsewhere}")
    return results


# --- FLEET-003..005: live migration inside each cluster ------------------------------------


def _per_cluster(
    hosts: Sequence[HostFacts], pick: Callable[[ClusterMigration], Mapping[str, Result]]
) -> dict[str, Result]:
    return {name: r for c in migration.analyse(hosts) for name, r in pick(c).items()}


def machine_type(hosts: Sequence[HostFacts]) -> dict[str, Result]:
    """FLEET-003. A VM keeps its machine type: every host must run what the others give."""
    return _per_cluster(hosts, lambda c: c.machine_results)


def cpu_model(hosts: Sequence[HostFacts]) -> dict[str, Result]:
    """FLEET-004. A VM keeps its CPU: host-passthrough only moves between identical CPUs."""
    return _per_cluster(hosts, lambda c: c.cpu_results)


def versions(hosts: Sequence[HostFacts]) -> dict[str, Result]:
    """FLEET-005. Information: the QEMU and libvirt versions of each cluster."""
    return _per_cluster(hosts, lambda c: c.version_results)
