"""The arguments of check's probe call on one KVM host (playbooks/audit.yml), from the host's
settings as the settings task judged them (kvm_host's argument_specs defaults applied).

The settings task (plugins/action/kvm_host_settings.py, ``fleet``) computes them for every host
in one pass, and each host's probe task takes them with one template: ansible-core compiles a
task argument's templates again in every host's worker, which cost the controller about 20 ms
per host for the probe's ten templated arguments. The role's own tasks (apply's probe, the
AppArmor task, the restart check) take the AppArmor block and the listener's port from
roles/kvm_host/vars/main.yml; tests/unit/test_peers.py runs both and compares them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: Where apply may write kvmprep's AppArmor rule (the judge picks one by what the host's
#: libvirt-qemu abstraction reads); the probe looks for the block in each.
APPARMOR_FILES = (
    "/etc/apparmor.d/abstractions/libvirt-qemu.d/kvmprep-oneadmin",
    "/etc/apparmor.d/local/abstractions/libvirt-qemu",
    "/etc/apparmor.d/abstractions/libvirt-qemu",
)
#: ansible.builtin.blockinfile's marker for the rule (roles/kvm_host/tasks/apparmor.yml).
APPARMOR_MARKER = "# {mark} kvmprep: OpenNebula datastores"
#: libvirt's listener port per migration transport (none for ssh).
LISTENER_PORTS = {"tcp": 16509, "tls": 16514}
#: The first of QEMU's migration ports, unless qemu.conf's migration_port_min says otherwise.
QEMU_MIGRATION_PORT_MIN = 49152
#: The groups libvirt's socket may belong to on a supported distribution: the audit gathers no
#: facts, so it asks about each (apply asks about the distribution's own).
LIBVIRT_GROUPS = ("kvm", "libvirt", "libvirtd")


def apparmor_block(datastore_path: str) -> str:
    """The rule apply writes between the markers."""
    return f"  owner {datastore_path}/** rwk,"


def apparmor_blocks(datastore_path: str) -> list[dict[str, str]]:
    """The probe's ``blocks``: the rule, as blockinfile writes it, in each file it may be in."""
    block = apparmor_block(datastore_path)
    return [{"path": p, "marker": APPARMOR_MARKER, "block": block} for p in APPARMOR_FILES]


def listener_port(transport: str) -> int:
    """The migration listener's port (0: ssh, no listener)."""
    return LISTENER_PORTS.get(transport, 0)


def _port(value: Any) -> int:
    # A value that is no port number (the settings task lets qemu.conf's keys through as
    # text): QEMU's own default, which is what a migration would then try.
    try:
        number = int(value)
    except (TypeError, ValueError):
        return QEMU_MIGRATION_PORT_MIN
    return number if 0 < number < 65536 else QEMU_MIGRATION_PORT_MIN


def ports(settings: Mapping[str, Any]) -> list[int]:
    """NET-002's ports: the listener's (none for ssh) and the first of QEMU's migration range."""
    extra = settings.get("kvm_host_qemu_conf_extra") or {}
    first = _port(extra.get("migration_port_min", QEMU_MIGRATION_PORT_MIN))
    listener = listener_port(str(settings.get("kvm_host_migration_transport")))
    return [listener, first] if listener else [first]


def groups(settings: Mapping[str, Any]) -> list[str]:
    """The groups whose members the probe reads: libvirt's candidates and the settings' own."""
    named = (
        *LIBVIRT_GROUPS,
        settings.get("kvm_host_kvm_device_group"),
        settings.get("kvm_host_oneadmin_group"),
        settings.get("kvm_host_libvirt_group"),
    )
    return list(dict.fromkeys(str(g) for g in named if g))


def probe_arguments(
    settings: Mapping[str, Any],
    *,
    frontend: str,
    names: Sequence[str],
    peers: Sequence[Mapping[str, str]],
    expect: Mapping[str, Any],
) -> dict[str, Any]:
    """Every argument of the host's probe call but ``gather`` (the playbook's own): ``names``,
    the names it resolves (NET-001); ``peers``, the other hosts of its cluster (NET-002,
    ONE-008); ``expect``, what the controls judge it against (returned unchanged)."""
    return {
        "blocks": apparmor_blocks(str(settings["kvm_host_apparmor_datastore_path"])),
        "user": settings["kvm_host_oneadmin_user"],
        "emulator": settings["kvm_host_emulator_link"],
        "remotes_dir": settings["kvm_host_remotes_dir"],
        "frontend": frontend,
        "names": list(names),
        "peers": [dict(p) for p in peers],
        "ports": ports(settings),
        "groups": groups(settings),
        "expect": dict(expect),
    }
