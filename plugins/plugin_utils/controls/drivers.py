"""ONE-009 and ONE-010: what OpenNebula's drivers rely on at run time, beyond ONE-004's files.

ONE-009: the drivers run their network and storage commands with ``sudo -n``; a rule naming a
path where the command is not (it moved: ``ipset``, one#5909; the /usr merge, one#6090) makes
sudo ask for a password and the driver fail. kvm_host_probe's ``one.runtime.sudo`` lists the
command paths the rules of /etc/sudoers.d/opennebula* and kvmprep's file name, and
runs ``sudo -n -l`` as oneadmin.

ONE-010: (a) the KVM driver migrates with ``virsh migrate ... $QEMU_PROTOCOL://<host>/system``
(kvmrc): qemu+tcp and qemu+tls need the destination's libvirt listener, authenticated; with
qemu+ssh an open listener is attack surface for nothing. (b) monitord refuses a PROBES_PERIOD
without a key its version expects and the hosts go OFFLINE (one#7659: EXEC_VM, new in 7.2).
(c) a file in the front-end's remotes that oneadmin does not own makes ``onehost sync`` fail
(one#5906).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.libvirt import (
    DEFAULT_AUTH_TCP,
    PORTS,
)
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import (
    Expect,
    HostFacts,
    MissingFact,
    Result,
    Role,
    fact,
)
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.opennebula import (
    frontend_of,
    kvm_hosts,
)

SHOWN = 5

#: The programs OpenNebula's sudoers rules name for drivers a KVM host may not use (network
#: filtering and Open vSwitch, LVM, Ceph, LXC, NFS, iSCSI and multipath, HA, vGPU, vTPM;
#: share/sudoers/sudoers.rb): a rule naming one that is not installed at all is harmless, sudo
#: has nothing to run and the driver that needs it needs its package first.
OPTIONAL_TOOLS = frozenset(
    (
        "iptables",
        "ip6tables",
        "ipset",
        "ebtables",
        "nft",
        "bridge",
        "devlink",
        "ethtool",
        "arping",
        "lvcreate",
        "lvremove",
        "lvs",
        "vgdisplay",
        "lvchange",
        "lvscan",
        "lvextend",
        "dmsetup",
        "ovs-ofctl",
        "ovs-vsctl",
        "ovs-appctl",
        "rbd",
        "rbd-nbd",
        "systemctl",
        "service",
        "mount",
        "umount",
        "bindfs",
        "losetup",
        "qemu-nbd",
        "e2fsck",
        "resize2fs",
        "xfs_growfs",
        "lxc-attach",
        "lxc-config",
        "lxc-create",
        "lxc-destroy",
        "lxc-info",
        "lxc-ls",
        "lxc-start",
        "lxc-stop",
        "lxc-console",
        "lxc-device",
        "lxc-freeze",
        "lxc-unfreeze",
        "blockdev",
        "multipath",
        "multipathd",
        "iscsiadm",
        "tee",
        "find",
        "cat",
        "sed",
        "dmidecode",
        "sudo",
        "create_container_image.sh",
    )
)
#: Scripts the rules name inside the remotes: they arrive with them (ONE-001).
REMOTES_PREFIX = "/var/tmp/one/"


def _shown(items: Sequence[str]) -> str:
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


# --- ONE-009 ---------------------------------------------------------------------------------


def sudo_rules(facts: Mapping[str, Any], expect: Expect) -> Result:
    """ONE-009. Every command the OpenNebula sudoers rules name is where they say, and sudo
    answers oneadmin without a password."""
    sudo = fact(facts, "one", "runtime", "sudo")
    user = expect.oneadmin_user
    unreadable = [f"{f['path']}: {f['error']}" for f in sudo.get("files") or [] if f.get("error")]
    read = [f["path"] for f in sudo.get("files") or [] if not f.get("error")]
    problems: list[str] = []
    fixes: list[str] = []
    absent: list[str] = []
    for entry in sudo.get("commands") or []:
        if entry.get("exists"):
            continue
        command, where = entry["command"], f"{entry['alias']} in {entry['file']}"
        if entry.get("elsewhere"):
            problems.append(
                f"{command} ({where}) does not exist, {entry['elsewhere']} does: sudo asks "
                "for a password"
            )
            fixes.append(f"name {entry['elsewhere']} instead of {command} in {entry['file']}")
        elif PurePosixPath(command).name in OPTIONAL_TOOLS or command.startswith(REMOTES_PREFIX):
            absent.append(command)
        else:
            problems.append(f"{command} ({where}) is not on this host")
            fixes.append(f"install {PurePosixPath(command).name} or remove it from {entry['file']}")
    if not read and not unreadable:
        return Result.skip(
            "no OpenNebula sudoers rules (/etc/sudoers.d/opennebula*, kvmprep-oneadmin): "
            "ONE-004 judges the file"
        )
    listing = sudo.get("list") or {}
    if listing.get("ok") is False:
        problems.append(f"`sudo -n -l` as {user} fails: {listing.get('error')}")
        fixes.append(
            f"let {user} run its rules without a password (NOPASSWD, and no "
            "`Defaults requiretty` for it); check with `runuser -u oneadmin -- sudo -n -l`"
        )
    if problems:
        fix = "; ".join(fixes) + (
            " (kvmprep apply rewrites its own /etc/sudoers.d/kvmprep-oneadmin; the node "
            "package's file comes back with `apt-get install --reinstall opennebula-node-kvm`)"
        )
        return Result.fail("; ".join(problems + unreadable), fix)
    if unreadable:
        return Result.error("cannot read " + "; ".join(unreadable))
    if listing.get("ok") is None:
        return Result.error(f"`sudo -n -l` as {user} was not run: {listing.get('error')}")
    count = len(sudo.get("commands") or []) - len(absent)
    note = f"; not installed (the drivers that use them need them first): {_shown(absent)}"
    return Result.passed(
        f"{count} command(s) named in {', '.join(read)} exist; `sudo -n -l` answers {user} "
        "without a password" + (note if absent else "")
    )


# --- ONE-010 ---------------------------------------------------------------------------------

#: The keys of monitord.conf's PROBES_PERIOD each version's monitord expects, as its default
#: monitord.conf has them (src/monitor/etc/monitord.conf): monitord.conf came with 5.12,
#: EXEC_VM with 7.2 (one#7659; 7.1.80 and later are its development builds).
PROBES_PERIOD_KEYS: tuple[tuple[tuple[int, int, int], frozenset[str]], ...] = (
    (
        (7, 1, 80),
        frozenset(
            {
                "BEACON_HOST",
                "SYSTEM_HOST",
                "MONITOR_HOST",
                "STATE_VM",
                "EXEC_VM",
                "MONITOR_VM",
                "SYNC_STATE_VM",
            }
        ),
    ),
    (
        (5, 12, 0),
        frozenset(
            {
                "BEACON_HOST",
                "SYSTEM_HOST",
                "MONITOR_HOST",
                "STATE_VM",
                "MONITOR_VM",
                "SYNC_STATE_VM",
            }
        ),
    ),
)


def _version(text: str | None) -> tuple[int, int, int] | None:
    found = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", str(text or "").strip())
    if not found:
        return None
    major, minor, patch = found.groups()
    return int(major), int(minor), int(patch or 0)


def expected_probes(version: str | None) -> frozenset[str] | None:
    """The PROBES_PERIOD keys of ``version``'s default monitord.conf; empty before 5.12 (no
    monitord), None when the version is unknown."""
    parsed = _version(version)
    if parsed is None:
        return None
    for since, keys in PROBES_PERIOD_KEYS:
        if parsed >= since:
            return keys
    return frozenset()


def _exposed(facts: Mapping[str, Any], port: int) -> list[str] | None:
    """The non-loopback endpoints listening on ``port``; None when unknown."""
    sockets = fact(facts, "listen").get("sockets")
    if sockets is None:
        return None
    found = []
    for sock in sockets:
        address = str(sock.get("address"))
        if sock.get("port") != port or address in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
            continue
        found.append(f"[{address}]:{port}" if ":" in address else f"{address}:{port}")
    return found


def _listener_conf(facts: Mapping[str, Any]) -> Mapping[str, Any]:
    layout = fact(facts, "libvirt", "layout")
    entry = fact(facts, "config", "virtproxyd.conf" if layout == "modular" else "libvirtd.conf")
    return entry.get("keys") or {}


def _protocol_problem(
    facts: Mapping[str, Any], protocol: str, expect: Expect
) -> tuple[str, str, str] | None:
    """(status, message, fix) when the host's listeners do not serve ``protocol``."""
    transport = protocol.removeprefix("qemu+")
    if transport in PORTS:
        port = PORTS[transport]
        exposed = _exposed(facts, port)
        if exposed is None:
            return "error", f"cannot read the listening sockets: {fact(facts, 'listen')}", ""
        fix = (
            f"kvm_host_migration_transport: {transport} and kvmprep apply (opens the "
            f"authenticated listener on {port}), or one_frontend_migration_protocol (auto "
            "follows the hosts) and kvmprep apply on the front-end"
        )
        if not exposed:
            return (
                "fail",
                f"kvmrc says {protocol} but nothing listens on TCP port {port} here (but "
                "loopback): "
                "migrations to this host fail",
                fix,
            )
        auth = _listener_conf(facts).get("auth_tcp", DEFAULT_AUTH_TCP)
        if transport == "tcp" and auth == "none":
            # As LV-006: the inventory may accept it (kvm_host_libvirt_tcp_allow_unauthenticated).
            return (
                "warn" if expect.libvirt_tcp_allow_unauthenticated else "fail",
                f'kvmrc says {protocol} and {", ".join(exposed)} listens with auth_tcp = "none": '
                "whoever reaches the port controls the VMs",
                'kvmprep apply sets auth_tcp = "sasl" (kvm_host_libvirt_tcp_auth)',
            )
        return None
    if transport == "ssh":
        exposed = [e for port in PORTS.values() for e in (_exposed(facts, port) or [])]
        if exposed:
            return (
                "warn",
                f"kvmrc says {protocol} but libvirt listens on {', '.join(exposed)}: attack "
                "surface no migration uses",
                "kvm_host_migration_transport: ssh and kvmprep apply (closes the listener), or "
                "migrate over it: one_frontend_migration_protocol: auto",
            )
        return None
    return "warn", f"kvmrc's QEMU_PROTOCOL {protocol!r} is not one kvmprep knows", ""


def _host_protocols(host: HostFacts, fe: HostFacts | None) -> Result:
    kvmrc = fact(host.facts, "one", "kvmrc")
    said: dict[str, str] = {}  # protocol -> where it is said
    if kvmrc.get("exists"):
        # Unset: the driver's default in the migrate script.
        said.setdefault(kvmrc.get("qemu_protocol") or "qemu+ssh", f"{kvmrc['path']} here")
    elif kvmrc.get("error"):
        return Result.error(f"cannot read {kvmrc['path']}: {kvmrc['error']}")
    if fe is not None and not fe.error:
        fe_kvmrc = (fe.facts.get("files") or {}).get("kvmrc") or {}
        fe_protocol = (fe.facts.get("kvmrc") or {}).get("qemu_protocol")
        if fe_protocol or fe_kvmrc.get("exists"):
            said.setdefault(fe_protocol or "qemu+ssh", f"the kvmrc of {fe.name}")
    if not said:
        return Result.skip(
            f"no kvmrc in {kvmrc['path']} (the front-end copies it) and no front-end to read"
        )
    found = []
    for protocol, where in said.items():
        problem = _protocol_problem(host.facts, protocol, host.expect)
        if problem is not None:
            found.append((*problem, where))
    if any(status == "error" for status, *_rest in found):
        return Result.error("; ".join(m for _s, m, _f, _w in found))
    messages = "; ".join(f"{m} ({w})" for _s, m, _f, w in found)
    fixes = "; ".join(dict.fromkeys(f for _s, _m, f, _w in found if f))
    if any(status == "fail" for status, *_rest in found):
        return Result.fail(messages, fixes)
    if found:
        return Result.warn(messages, fixes)
    shown = ", ".join(f"{p} ({w})" for p, w in said.items())
    return Result.passed(f"the listeners serve {shown}")


def _frontend_config(fe: HostFacts) -> Result:
    facts, user = fe.facts, fe.expect.oneadmin_user
    problems: list[str] = []
    fixes: list[str] = []
    version = facts.get("version")
    expected = expected_probes(version)
    monitord = fact(facts, "files", "monitord.conf")
    if expected is None:
        problems.append("the OpenNebula version is unknown (no remotes VERSION)")
    elif expected:
        have = fact(facts, "monitord").get("probes_period")
        if monitord.get("error"):
            problems.append(f"cannot read {monitord['path']}: {monitord['error']}")
        elif not monitord.get("exists"):
            problems.append(f"no {monitord['path']}")
        elif have is None:
            problems.append(f"{monitord['path']} has no PROBES_PERIOD")
        missing = sorted(expected - set(have or [])) if have is not None else []
        if missing:
            problems.append(
                f"PROBES_PERIOD in {monitord['path']} lacks {', '.join(missing)}, which "
                f"OpenNebula {version}'s monitord expects: the hosts go OFFLINE"
            )
        if missing or have is None:
            fixes.append(
                f"add {', '.join(missing or sorted(expected))} to PROBES_PERIOD in "
                f"{monitord['path']} with the values of the version's default (onecfg upgrade "
                "does it), then restart OpenNebula"
            )
    remotes = fact(facts, "remotes")
    if not remotes.get("exists"):
        problems.append(f"no remotes dir {remotes.get('path')}")
    else:
        foreign = list(remotes.get("foreign") or [])
        count = remotes.get("foreign_count") or 0
        if remotes.get("owner") != user:
            foreign.insert(0, f"{remotes['path']} ({remotes.get('owner')})")
            count += 1
        if count:
            problems.append(
                f"{count} path(s) in {remotes['path']} not {user}'s: {_shown(foreign)}; "
                "onehost sync fails on them"
            )
            fixes.append(f"chown -R {user}: {remotes['path']}, then onehost sync --force")
    if problems:
        return Result.fail("; ".join(problems), "; ".join(fixes))
    keys = f"PROBES_PERIOD has the {len(expected or ())} keys of {version}; " if expected else ""
    return Result.passed(f"{keys}{remotes['path']} is all {user}'s")


def driver_settings(hosts: Sequence[HostFacts]) -> dict[str, Result]:
    """ONE-010. On each host, kvmrc's QEMU_PROTOCOL (the host's copy and the front-end's)
    against the listeners; on the front-end, monitord's PROBES_PERIOD and its remotes."""
    fe = frontend_of(hosts)
    results: dict[str, Result] = {}
    for host in kvm_hosts(hosts):
        try:
            results[host.name] = _host_protocols(host, fe)
        except MissingFact as exc:
            results[host.name] = Result.error(f"fact {exc} was not gathered")
    if fe is not None and fe.role is Role.FRONTEND:
        if fe.error:
            results[fe.name] = Result.error(f"front-end {fe.name} was not probed: {fe.error}")
        else:
            try:
                results[fe.name] = _frontend_config(fe)
            except MissingFact as exc:
                results[fe.name] = Result.error(f"fact {exc} was not gathered")
    return results
