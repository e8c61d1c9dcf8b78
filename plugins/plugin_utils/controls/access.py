"""Judge of LV-004: can the QEMU user reach qemu:///system (no connection, only facts)?

A client of qemu:///system connects to the unix socket of the daemon that runs QEMU: the
file mode and group of that socket decide who may connect (under socket activation they
come from the systemd unit, not libvirtd.conf, so the socket itself is what is judged), then
``auth_unix_rw`` decides whether polkit must also agree. apply sets it to "none" (with the
socket's group and mode): the judge's access settings are what a compliant host has, so access
that works by another way (a polkit rule) is still a change apply would make.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ansible_collections.kvmprep.kvm.plugins.module_utils import kvm_host_judge
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.libvirt import (
    config_changes,
    would_change,
)
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import Expect, Result, fact

SOCKETS = {"modular": "/run/libvirt/virtqemud-sock"}
DEFAULT_SOCKET = "/run/libvirt/libvirt-sock"


def _conf_name(layout: str) -> str:
    return "virtqemud.conf" if layout == "modular" else "libvirtd.conf"


def _socket_access(sock: Mapping[str, Any], user: str, groups: Sequence[str]) -> str | None:
    """Why ``user`` may open the socket (None: it may not)."""
    mode = int(str(sock.get("mode") or "0"), 8)
    if mode & 0o006 == 0o006:
        return "world read-write"
    if sock.get("group") in groups and mode & 0o060 == 0o060:
        return f"group {sock['group']}"
    if sock.get("owner") == user and mode & 0o600 == 0o600:
        return "owner"
    return None


def qemu_system_access(facts: Mapping[str, Any], expect: Expect) -> Result:
    """LV-004."""
    layout = str(fact(facts, "libvirt", "layout"))
    if layout == "none":
        return Result.fail("no libvirt daemon installed")
    user = fact(facts, "accounts", "user")
    if user is None:
        return Result.fail(f"user {expect.oneadmin_user} does not exist")
    name = user["name"]
    groups = list(fact(facts, "accounts", "user_groups"))
    path = SOCKETS.get(layout, DEFAULT_SOCKET)
    sock = fact(facts, "access", "sockets", path)
    if not sock.get("exists"):
        return Result.fail(f"{path}: {sock.get('error') or 'missing'} (is the daemon running?)")
    shown = f"{path} {sock.get('owner')}:{sock.get('group')} {sock.get('mode')}"
    why = _socket_access(sock, name, groups)
    if why is None:
        return Result.fail(f"{shown}: {name} (groups {', '.join(groups)}) may not connect")
    entry = fact(facts, "config", _conf_name(layout))
    if entry.get("exists") and entry.get("keys") is None:
        return Result.error(f"cannot read {entry['path']}: {entry.get('error')}")
    # Access as apply sets it (socket group and mode, no polkit): anything else works by luck
    # and is undone by the next apply, with a restart of libvirt.
    changes = [c for c in config_changes(facts, expect) if c[1] in kvm_host_judge.ACCESS_KEYS]
    if changes:
        return Result.fail(f"{shown} ({why}), but {would_change(changes)}")
    return Result.passed(f'{shown} ({why}), auth_unix_rw = "none"')
