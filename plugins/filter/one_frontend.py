"""Filters of the one_frontend role: the front-end's defaults computed from the hosts' facts,
and the /etc/hosts lines of every machine.

The judgement lives in the collection's module_utils/machine_types.py, which kvmprep check
imports too: apply sets what check would ask for. Nothing here imports the kvmprep Python
package, so the filters work where only the collection is installed (AWX).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.kvmprep.kvm.plugins.module_utils.machine_types import (
    common_machine_type as newest_common,
)

#: A host name as /etc/hosts and DNS take it: dot-separated labels of letters, digits and
#: hyphens (RFC 1123: 1 to 63 characters, no hyphen first or last), 253 characters at most.
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")


def common_machine_type(hosts: Iterable[Mapping[str, Any]], like: str | None = None) -> str:
    """The newest machine type of ``like``'s family (default: pc, the emulators' default) that
    every host's QEMU runs; fails naming the problem when there is none."""
    hosts = list(hosts)
    family = like or "pc"
    found = newest_common(hosts, like=family)
    if found is None:
        raise AnsibleFilterError(
            f"no {family} machine type runs on every host ({len(hosts)} hosts): a host's QEMU "
            "could not be asked, or the hosts share none; set one_frontend_vmm_machine"
        )
    return found


def valid_host_name(name: Any) -> bool:
    """Whether ``name`` may go into /etc/hosts as a host name (nothing else can ride along)."""
    if not isinstance(name, str) or not name or len(name) > 253:
        return False
    return all(_LABEL.match(label) for label in name.split("."))


def ip_address(value: Any) -> str | None:
    """``value`` as a canonical IP address (IPv6 zone and blanks refused), else None."""
    if not isinstance(value, str) or value != value.strip() or "%" in value:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def etc_hosts(machines: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """The /etc/hosts lines of every machine and the machines whose address is unknown.

    Each machine: ``machine`` (inventory name), ``names`` (its inventory name and
    one_frontend_host_name; empty ones are dropped), ``ansible_host`` and ``addresses`` (what
    one_frontend_ssh reported in this run; empty when it did not run there). The address is
    ansible_host when that is an IP address, else the first of ``addresses``. Returns
    ``{"lines": [...], "missing": [machines without an address]}``; a name that is not a host
    name, an address that is not an IP address, or a name given to two machines fails, naming
    the machine: nothing unchecked reaches /etc/hosts.
    """
    lines: list[str] = []
    missing: list[str] = []
    owner: dict[str, str] = {}
    for entry in machines:
        machine = str(entry.get("machine"))
        names = list(dict.fromkeys(n for n in entry.get("names") or [] if n))
        for name in names:
            if not valid_host_name(name):
                raise AnsibleFilterError(
                    f"/etc/hosts: {name!r} (a name of {machine}) is not a host name: letters, "
                    "digits, hyphens and dots only (set one_frontend_host_name to one, or leave "
                    "one_frontend_manage_etc_hosts off)"
                )
            if owner.setdefault(name.lower(), machine) != machine:
                raise AnsibleFilterError(
                    f"/etc/hosts: the name {name} is given to {owner[name.lower()]} and {machine}"
                )
        given = entry.get("ansible_host")
        address = ip_address(given) if given else None
        if address is None:
            found = [a for a in entry.get("addresses") or [] if a]
            if not found:
                missing.append(machine)
                continue
            address = ip_address(found[0])
            if address is None:
                raise AnsibleFilterError(
                    f"/etc/hosts: {found[0]!r} (the address of {machine}) is not an IP address"
                )
        lines.append(" ".join([address, *names]))
    return {"lines": lines, "missing": missing}


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "one_frontend_common_machine_type": common_machine_type,
            "one_frontend_etc_hosts": etc_hosts,
        }
