# -*- coding: utf-8 -*-
"""kvm_host_probe's libvirt group: the state of libvirt's systemd units (the ones
kvm_host_layouts lists), the daemon layout, the daemon defaults file and version.
"""

import os
import re

from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_layouts import (
    UNITS as LAYOUT_UNITS,
)
from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_layouts import (
    is_active,
    is_enabled,
    is_masked,
)
from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_probe_apparmor import (
    gather_apparmor,
)
from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_probe_common import (
    BIN_DIRS,
    UNSET,
    deferred,
    read_text,
    run,
)

# Every unit of every layout (kvm_host_layouts.UNITS): apply decides on no unit the probe did
# not look at.
UNITS = LAYOUT_UNITS
UNIT_DIRS = (
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
)


DEFAULTS_FILES = (
    ("/etc/default/libvirtd", "LIBVIRTD_ARGS"),
    ("/etc/default/libvirt-bin", "libvirtd_opts"),
    ("/etc/sysconfig/libvirtd", "LIBVIRTD_ARGS"),
)


LIBVIRTD_DIRS = ("/usr/sbin", "/usr/bin")


def unit_present(unit, dirs=UNIT_DIRS):
    # lexists: a masked unit is a symlink to /dev/null and still counts as present.
    return any(os.path.lexists(os.path.join(d, unit)) for d in dirs)


def parse_systemctl_states(units, stdout):
    """Map units to the lines systemctl printed for them, or None if the count differs."""
    lines = [line.strip() for line in (stdout or "").splitlines() if line.strip()]
    if len(lines) != len(units):
        return None
    return {unit: lines[i] for i, unit in enumerate(units)}


def decide_layout(units, libvirtd_binary=False):
    """Decide the libvirt daemon layout from the units dict and the presence of libvirtd.

    modular: virtqemud (socket or service) enabled or active while libvirtd.service is neither;
    socket: monolithic libvirtd with systemd socket activation (libvirtd.socket present and not
    masked: masking the sockets is libvirt's documented way back to the classic mode);
    classic: libvirtd.service present or a libvirtd binary exists; none otherwise.
    """

    def get(unit):
        return units.get(unit) or {}

    def on(unit):
        # Started at boot or running. A "static" unit (is_enabled: apply cannot enable it) is
        # started only by what pulls it in, so it says nothing about which daemon runs.
        u = get(unit)
        enabled = u.get("enabled")
        return (is_enabled(enabled) and enabled != "static") or is_active(u.get("active"))

    if (on("virtqemud.socket") or on("virtqemud.service")) and not on("libvirtd.service"):
        return "modular"
    sock = get("libvirtd.socket")
    if sock.get("present") and not is_masked(sock.get("enabled")):
        return "socket"
    if get("libvirtd.service").get("present") or libvirtd_binary:
        return "classic"
    return "none"


def _unquote_word(text):
    """Unquote a shell assignment value (first word, quotes and backslashes removed)."""
    out = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\r\n;":
            break
        if ch == "'":
            end = text.find("'", i + 1)
            end = n if end < 0 else end
            out.append(text[i + 1 : end])
            i = end + 1
        elif ch == '"':
            j = i + 1
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n and text[j + 1] in '\\"$`':
                    j += 1
                out.append(text[j])
                j += 1
            i = j + 1
        elif ch == "\\" and i + 1 < n:
            out.append(text[i + 1])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def parse_shell_assignments(text):
    """Active VAR=value assignments of a shell fragment, unquoted (the last one wins)."""
    result = {}
    rx = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
    for line in (text or "").splitlines():
        m = rx.match(line)
        if m:
            result[m.group(1)] = _unquote_word(m.group(2))
    return result


def find_defaults(candidates=DEFAULTS_FILES):
    """Return (path, args) of the first existing defaults file (args None when unset)."""
    for path, var in candidates:
        if os.path.exists(path):
            return path, parse_shell_assignments(read_text(path)).get(var)
    return None, None


def parse_daemon_version(text):
    """'libvirtd (libvirt) 9.0.0' -> '9.0.0'."""
    m = re.search(r"(\d+\.\d+(?:\.\d+)*)", text or "")
    return m.group(1) if m else None


def _systemctl_states(module, systemctl, verb, units, first=None):
    """States printed by one 'systemctl VERB unit...' call (one call per unit if misaligned).
    ``first`` is that call's (rc, stdout) when it was started earlier."""
    _rc, out = first if first is not None else run(module, [systemctl, verb, *units])
    states = parse_systemctl_states(units, out)
    if states is not None:
        return states
    states = {}
    for unit in units:
        _rc, out = run(module, [systemctl, verb, unit])
        lines = [line.strip() for line in out.splitlines() if line.strip()]
        states[unit] = lines[0] if lines else "unknown"
    return states


def start_unit_states(module, systemd, dirs=UNIT_DIRS, start=None):
    """Which libvirt units exist, and systemctl asked for the state of those (started with
    ``start``, default: run when read): finish_unit_states reads the answers."""
    start = start or deferred(module)
    units = {}
    for unit in UNITS:
        present = unit_present(unit, dirs)
        state = "unknown" if present or not systemd else "not-found"
        units[unit] = {"present": present, "enabled": state, "active": state}
    queried = [u for u in UNITS if units[u]["present"]]
    systemctl = module.get_bin_path("systemctl", opt_dirs=BIN_DIRS) if systemd else None
    if not queried or systemctl is None:
        return units, None
    calls = {verb: start([systemctl, verb, *queried]) for verb in ("is-enabled", "is-active")}
    return units, (systemctl, queried, calls)


def finish_unit_states(module, started):
    """present/enabled/active of every libvirt unit, from start_unit_states'."""
    units, asked = started
    if asked is None:
        return units
    systemctl, queried, calls = asked
    states = {
        verb: _systemctl_states(module, systemctl, verb, queried, first=call.result())
        for verb, call in calls.items()
    }
    for unit in queried:
        units[unit]["enabled"] = states["is-enabled"].get(unit, "unknown")
        units[unit]["active"] = states["is-active"].get(unit, "unknown")
    return units


def gather_unit_states(module, systemd, dirs=UNIT_DIRS):
    """present/enabled/active of every libvirt unit."""
    return finish_unit_states(module, start_unit_states(module, systemd, dirs))


DAEMONS = ("libvirtd", "virtqemud")


def start_daemon_version(module, start=None, names=DAEMONS):
    """'libvirtd --version' (else virtqemud's: the first installed) started with ``start``
    (default: run when read), for finish_daemon_version; None when neither is installed."""
    start = start or deferred(module)
    for index, name in enumerate(names):
        path = module.get_bin_path(name, opt_dirs=BIN_DIRS)
        if path is not None:
            return start([path, "--version"]), names[index + 1 :]
    return None


def finish_daemon_version(module, started):
    """The version start_daemon_version's command printed, else the next daemon's."""
    while started is not None:
        call, others = started
        rc, out = call.result()
        version = parse_daemon_version(out) if rc == 0 else None
        if version:
            return version
        started = start_daemon_version(module, names=others) if others else None
    return None


def daemon_version(module):
    """Version printed by 'libvirtd --version', else 'virtqemud --version', else None."""
    return finish_daemon_version(module, start_daemon_version(module))


def start_libvirt(module, start=None):
    """The libvirt group's commands started early (start_unit_states), for gather_libvirt."""
    return start_unit_states(module, os.path.isdir("/run/systemd/system"), start=start)


def gather_libvirt(module, version=UNSET, errors=None, started=None):
    systemd = os.path.isdir("/run/systemd/system")
    units = finish_unit_states(
        module, started if started is not None else start_unit_states(module, systemd)
    )
    libvirtd_binary = any(os.path.exists(os.path.join(d, "libvirtd")) for d in LIBVIRTD_DIRS)
    defaults_file, defaults_args = find_defaults()
    return {
        "systemd": systemd,
        "units": units,
        "layout": decide_layout(units, libvirtd_binary),
        "defaults_file": defaults_file,
        "defaults_args": defaults_args,
        "daemon_version": daemon_version(module) if version is UNSET else version,
        "apparmor": gather_apparmor(module, errors=errors),
    }
