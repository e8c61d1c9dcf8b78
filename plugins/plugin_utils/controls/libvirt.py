"""Judges of the libvirt controls: qemu.conf, the daemon layout and the migration listener.

The layout decides what is effective: under socket activation systemd owns the sockets
(``listen_tcp`` is ignored, ``--listen`` is fatal); only the classic daemon reads both.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from ansible_collections.kvmprep.kvm.plugins.module_utils import kvm_host_judge
from ansible_collections.kvmprep.kvm.plugins.plugin_utils import audit_args
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import Expect, Result, fact

PORTS = audit_args.LISTENER_PORTS
# libvirt's built-in default when auth_tcp is not set (libvirtd.conf documents it).
DEFAULT_AUTH_TCP = "sasl"


def _qemu_conf(facts: Mapping[str, Any]) -> tuple[Mapping[str, Any] | None, Result | None]:
    """The parsed qemu.conf keys, or the result to give when they cannot be had."""
    entry = fact(facts, "config", "qemu.conf")
    if not entry.get("exists"):
        return None, Result.fail(f"{entry['path']} not found (libvirt's QEMU driver missing)")
    if entry.get("keys") is None:
        return None, Result.error(f"cannot read {entry['path']}: {entry.get('error')}")
    return entry["keys"], None


def _not_parsed(facts: Mapping[str, Any], name: str, keys: Sequence[str]) -> list[str]:
    invalid = fact(facts, "config", name).get("invalid") or []
    return [k for k in keys if k in invalid]


#: Where the judge's daemon defaults edit names the file when the probe found none (check does
#: not know the distribution's path; apply's plan does).
DEFAULTS_FILE = "the daemon defaults file"
QEMU_CONF = "/etc/libvirt/qemu.conf"
QEMU_USER_KEYS = frozenset({"user", "group"})


def config_changes(facts: Mapping[str, Any], expect: Expect) -> list[tuple[str, str, str]]:
    """What apply's kvm_host_conf would change in libvirt's files, as ``(path, key, sentence)``:
    the judge's edits (the same apply's plan makes) against the files the probe read."""
    j = kvm_host_judge
    settings = expect.settings()
    lv = fact(facts, "libvirt")
    group = j.libvirt_group(facts.get("accounts") or {}, settings)
    edits = j.config_edits(settings, j.layout(settings, lv), lv, group, DEFAULTS_FILE)
    return [tuple(c) for c in j.config(fact(facts, "config"), lv, edits)]


def _listener_change(change: tuple[str, str, str], layout: str) -> bool:
    path, key, _sentence = change
    if path == QEMU_CONF or key in kvm_host_judge.ACCESS_KEYS:
        return False
    return not _defaults_removal(change, layout)


def _defaults_removal(change: tuple[str, str, str], layout: str) -> bool:
    """A --listen apply removes from a socket-activated libvirtd's defaults file (LV-007's)."""
    path, _key, _sentence = change
    return not path.startswith("/etc/libvirt/") and layout == "socket"


def would_change(changes: Sequence[tuple[str, str, str]]) -> str:
    return "apply would change: " + "; ".join(sentence for _p, _k, sentence in changes)


def dynamic_ownership(facts: Mapping[str, Any], expect: Expect) -> Result:
    """LV-001, with the rest of qemu.conf apply sets (kvm_host_qemu_conf_extra)."""
    keys, problem = _qemu_conf(facts)
    if problem is not None:
        return problem
    if keys is None:
        raise AssertionError("no problem and no keys")
    if _not_parsed(facts, "qemu.conf", ["dynamic_ownership"]):
        return Result.fail("dynamic_ownership in qemu.conf does not parse")
    value = keys.get("dynamic_ownership")
    if value is None:
        return Result.fail("dynamic_ownership is not set (libvirt's default is 1)")
    if value != 0:
        return Result.fail(f"dynamic_ownership = {value}")
    others = [
        c for c in config_changes(facts, expect) if c[0] == QEMU_CONF and c[1] not in QEMU_USER_KEYS
    ]
    if others:
        return Result.fail(f"dynamic_ownership = 0, but {would_change(others)}")
    extra = sorted(expect.qemu_conf_extra)
    return Result.passed(
        "dynamic_ownership = 0" + (f", {', '.join(extra)} as set" if extra else "")
    )


def qemu_user(facts: Mapping[str, Any], expect: Expect) -> Result:
    """LV-002."""
    keys, problem = _qemu_conf(facts)
    if problem is not None:
        return problem
    if keys is None:
        raise AssertionError("no problem and no keys")
    changes = [
        c for c in config_changes(facts, expect) if c[0] == QEMU_CONF and c[1] in QEMU_USER_KEYS
    ]
    if changes:
        return Result.fail(
            f"{would_change(changes)} (QEMU must run as "
            f"{expect.oneadmin_user}:{expect.oneadmin_group})"
        )
    return Result.passed(f"user = {keys['user']!r}, group = {keys['group']!r}")


def _units_plan(lv: Mapping[str, Any], expect: Expect) -> tuple[Any, frozenset[str]]:
    """The judge's plan for libvirt's units (what apply would change), and the listener units
    of every layout (LV-005's part of the plan; the rest is LV-003's)."""
    j = kvm_host_judge
    listeners = frozenset(u for layout in j.LAYOUTS.values() for u in layout["listener"].values())
    return j.units(lv, expect.settings()), listeners


def _unit_changes(plan: Any, keep: Any) -> list[str]:
    verbs = (
        ("to_mask", "masked"),
        ("to_unmask", "unmasked"),
        ("to_enable", "enabled"),
        ("to_disable", "stopped and disabled"),
        ("to_start", "started"),
    )
    return [f"{u} {verb}" for attr, verb in verbs for u in getattr(plan, attr) if keep(u)]


def _unknown(lv: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    units = lv.get("units") or {}
    return [
        u
        for u in names
        if "unknown"
        in (str((units.get(u) or {}).get(k) or "unknown") for k in ("enabled", "active"))
    ]


def daemon_layout(facts: Mapping[str, Any], expect: Expect) -> Result:
    """LV-003. The daemon's units as apply leaves them (the judge's plan, listener aside).
    Under socket activation libvirtd.service may be inactive (--timeout): the sockets are what
    must be enabled and active."""
    lv = fact(facts, "libvirt")
    if fact(lv, "layout") == "none":
        return Result.fail("no libvirt daemon installed")
    if not lv.get("systemd"):
        return Result.skip("systemd is not the running init: unit states cannot be judged")
    plan, listeners = _units_plan(lv, expect)
    wanted = kvm_host_judge.wanted_units(plan.layout, expect.migration_transport)
    daemon = [u for u in wanted["enabled"] if u not in listeners]
    unknown = _unknown(lv, daemon)
    if unknown:
        return Result.error(f"systemctl could not tell the state of {', '.join(unknown)}")
    changes = _unit_changes(plan, lambda u: u not in listeners)
    if changes:
        return Result.fail(f"{plan.layout} layout: apply would change: {', '.join(changes)}")
    running = [u for u in wanted["running"] if u not in listeners]
    return Result.passed(
        f"{plan.layout} layout: {', '.join(daemon)} enabled, {', '.join(running)} active"
    )


def is_loopback(address: str) -> bool:
    """A loopback address, IPv4-mapped ones included (what a listener there serves no peer)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


def _listening(facts: Mapping[str, Any], port: int) -> tuple[list[str] | None, Result | None]:
    listen = fact(facts, "listen")
    sockets = listen.get("sockets")
    if sockets is None:
        return None, Result.error(f"cannot read the listening sockets: {listen.get('error')}")
    found = [s for s in sockets if s.get("port") == port]
    return [_endpoint(s) for s in found], None


def _endpoint(sock: Mapping[str, Any]) -> str:
    address = str(sock.get("address"))
    return f"[{address}]:{sock.get('port')}" if ":" in address else f"{address}:{sock.get('port')}"


def _daemon_conf(facts: Mapping[str, Any], layout: str) -> Mapping[str, Any]:
    """The config entry of the daemon that owns the network listener."""
    return fact(facts, "config", "virtproxyd.conf" if layout == "modular" else "libvirtd.conf")


def _words(args: str | None) -> list[str]:
    return (args or "").split()


def listener(facts: Mapping[str, Any], expect: Expect) -> Result:
    """LV-005. Configured is not enough: a socket must be listening on the port."""
    transport = expect.migration_transport
    lv = fact(facts, "libvirt")
    layout = fact(lv, "layout")
    if transport not in PORTS:
        # A listener left open from another transport is one apply closes.
        closing = [c for c in config_changes(facts, expect) if _listener_change(c, layout)]
        if layout != "none" and closing:
            return Result.fail(f"migration transport {transport}: {would_change(closing)}")
        return Result.skip(f"migration transport {transport}: no libvirt listener is used")
    port = PORTS[transport]
    if layout == "none":
        return Result.fail("no libvirt daemon installed")
    endpoints, problem = _listening(facts, port)
    problems: list[str] = []
    plan, listeners = _units_plan(lv, expect)
    unit = next(iter(kvm_host_judge.wanted_units(plan.layout, transport)["listener"]), None)
    if unit is not None:
        if not lv.get("systemd"):
            return Result.skip(
                "systemd is not the running init: the listener unit cannot be judged"
            )
        if _unknown(lv, [unit]):
            return Result.error(f"systemctl could not tell the state of {unit}")
        changes = _unit_changes(plan, listeners.__contains__)
        if changes:
            problems.append(f"apply would change: {', '.join(changes)}")
        what = unit
    else:  # classic: listen_tcp/listen_tls in libvirtd.conf and --listen in the defaults file
        what = f"listen_{transport} = 1, --listen"
    entry = _daemon_conf(facts, layout)
    if entry.get("exists") and entry.get("keys") is None:
        return Result.error(f"cannot read {entry['path']}: {entry.get('error')}")
    # The listener's keys (authentication, listen_*, the defaults file's --listen) as apply
    # writes them; LV-004 judges the access keys, LV-007 a --listen apply would remove.
    changes = [c for c in config_changes(facts, expect) if _listener_change(c, layout)]
    if changes:
        problems.append(would_change(changes))
    if problem is not None:
        return problem
    if endpoints is None:
        raise AssertionError("no problem and no endpoints")
    if not endpoints:
        problems.append(f"nothing listens on TCP port {port}")
    if problems:
        return Result.fail(", ".join(problems))
    return Result.passed(f"{what}; listening on {', '.join(endpoints)}")


def unauthenticated_tcp(facts: Mapping[str, Any], expect: Expect) -> Result:
    """LV-006. auth_tcp = "none" is only a problem where someone else can reach the port."""
    port = PORTS["tcp"]
    listen = fact(facts, "listen")
    sockets = listen.get("sockets")
    if sockets is None:
        return Result.error(f"cannot read the listening sockets: {listen.get('error')}")
    exposed = [
        _endpoint(s)
        for s in sockets
        if s.get("port") == port and not is_loopback(str(s.get("address")))
    ]
    if not exposed:
        return Result.passed(f"no TCP listener on a non-loopback address (port {port})")
    entry = _daemon_conf(facts, str(fact(facts, "libvirt", "layout")))
    if entry.get("exists") and entry.get("keys") is None:
        why = f"cannot read {entry['path']}: {entry.get('error')}"
        return Result.error(f"listening on {', '.join(exposed)} and {why}")
    auth = (entry.get("keys") or {}).get("auth_tcp", DEFAULT_AUTH_TCP)
    if auth != "none":
        return Result.passed(f'auth_tcp = "{auth}" on {", ".join(exposed)}')
    message = (
        f'auth_tcp = "none" and listening on {", ".join(exposed)}: '
        "whoever reaches the port controls the VMs"
    )
    if expect.libvirt_tcp_allow_unauthenticated:
        return Result.warn(f"{message} (allowed by kvm_host_libvirt_tcp_allow_unauthenticated)")
    return Result.fail(message)


def listen_with_socket_activation(facts: Mapping[str, Any], expect: Expect) -> Result:
    """LV-007. libvirtd refuses to start with --listen when systemd passes it the sockets."""
    lv = fact(facts, "libvirt")
    layout = fact(lv, "layout")
    if layout != "socket":
        return Result.skip(f"libvirtd is not socket-activated here ({layout} layout)")
    args = lv.get("defaults_args")
    if {"--listen", "-l"} & set(_words(args)):
        return Result.fail(
            f"{lv.get('defaults_file')} passes {args!r} to a socket-activated libvirtd"
        )
    changes = [c for c in config_changes(facts, expect) if _defaults_removal(c, layout)]
    if changes:
        return Result.fail(would_change(changes))
    return Result.passed("no --listen in the daemon arguments")


def config_syntax(facts: Mapping[str, Any], expect: Expect) -> Result:
    """LV-008. libvirt refuses to start on a config file it cannot parse: catch it before a
    restart does."""
    config: Mapping[str, Any] = fact(facts, "config")
    broken, unreadable, checked = [], [], []
    for entry in config.values():
        if not entry.get("exists"):
            continue
        if entry.get("keys") is None:
            unreadable.append(f"{entry['path']}: {entry.get('error')}")
            continue
        if "syntax_error" not in entry:  # an older probe
            return Result.error(f"no syntax check of {entry['path']} was gathered")
        error = entry["syntax_error"]
        if error:
            broken.append(f"{entry['path']}:{error['line']}: {error['message']}")
        checked.append(entry["path"])
    if broken:
        return Result.fail("; ".join(broken))
    if unreadable:
        return Result.error("cannot read " + "; ".join(unreadable))
    if not checked:
        return Result.skip("no libvirt configuration file on this host")
    return Result.passed(f"{', '.join(checked)} parse")
