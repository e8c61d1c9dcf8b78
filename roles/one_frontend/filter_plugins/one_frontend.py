"""Filters of the one_frontend role: the front-end's defaults computed from the hosts' facts.

The judgement lives in kvmprep.controls.machines, which kvmprep check uses too: apply sets what
check would ask for. The filters run on the controller, where kvmprep is installed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError


def common_machine_type(hosts: Iterable[Mapping[str, Any]], like: str | None = None) -> str:
    """The newest machine type of ``like``'s family (default: pc, the emulators' default) that
    every host's QEMU runs; fails naming the problem when there is none."""
    from kvmprep.controls.machines import common_machine_type as newest_common

    hosts = list(hosts)
    family = like or "pc"
    found = newest_common(hosts, like=family)
    if found is None:
        raise AnsibleFilterError(
            f"no {family} machine type runs on every host ({len(hosts)} hosts): a host's QEMU "
            "could not be asked, or the hosts share none; set one_frontend_vmm_machine"
        )
    return found


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"one_frontend_common_machine_type": common_machine_type}
