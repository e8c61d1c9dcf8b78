#!/usr/bin/python
"""kvm_host_probe: read-only facts about a host's KVM and libvirt state."""

# Ansible module conventions: the documentation strings come before the imports, and os.path is
# used throughout (the code runs on the target's python3, standard library only).
DOCUMENTATION = r"""
---
module: kvm_host_probe
short_description: Gather read-only facts about KVM and libvirt on a host, in one call
description:
  - Reports the CPU vendor and virtualization flags, the state of the kvm kernel modules (loadable
    or built into the kernel, read from C(/sys/module), not C(/proc/modules)), and an actual probe
    of C(/dev/kvm) (C(KVM_GET_API_VERSION) and C(KVM_CREATE_VM) ioctls).
  - Reports the libvirt daemon layout (modular, socket-activated monolithic, classic, none), the
    state of the libvirt systemd units, the daemon defaults file, the daemon version and the
    AppArmor integration points.
  - With C(config), C(accounts), C(packages), C(listen) and C(devices) it also reports the active
    keys of the libvirt configuration files, the oneadmin account and its groups, the installed
    daemon, QEMU and driver tools, the TCP listeners on libvirt's ports, and /dev/net/tun and
    /dev/vhost-net; everything C(kvmprep check) judges, in one call.
  - With C(access) it opens /dev/kvm as I(user) (a child process that drops to the user's uid,
    gid and groups; root only) and reports the libvirt unix sockets and polkit rules; with
    C(identity) the sources libvirt derives its host UUID from.
  - Never changes anything; C(changed) is always false. Missing files and permission errors are
    reported as null/false values, never as a failure; what could not be read is listed in
    C(probe.errors) with the reason (for example permission denied when not run as root).
version_added: "0.1.0"
author:
  - kvmprep
options:
  gather:
    description: Which groups of facts to gather.
    type: list
    elements: str
    choices: [kvm, libvirt, config, accounts, packages, listen, devices, access, identity]
    default: [kvm, libvirt]
  user:
    description:
      - The account QEMU runs as and OpenNebula uses (for the C(accounts) and C(access) groups).
    type: str
    default: oneadmin
  groups:
    description: Groups whose existence and members the C(accounts) group reports.
    type: list
    elements: str
    default: [kvm, libvirt, libvirtd]
  expect:
    description:
      - What the controller expects (inventory values such as the oneadmin uid); not used on the
        host, returned unchanged as C(expect) so that the judgement uses the same values.
    type: dict
    default: {}
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
notes:
  - Runs C(systemctl is-enabled) and C(systemctl is-active) once each for all present units, and
    C(libvirtd --version) (or C(virtqemud --version)) once.
  - The VM created by the C(KVM_CREATE_VM) probe is an empty kernel object closed immediately.
  - The C(access) probe's child process is killed if it has not answered within 5 seconds and is
    always reaped.
"""

EXAMPLES = r"""
- name: Probe KVM and libvirt
  kvm_host_probe:
  register: kvm_probe

- name: KVM must be usable
  ansible.builtin.assert:
    that: kvm_probe.probe.kvm.usable
    fail_msg: "/dev/kvm is not usable: {{ kvm_probe.probe.kvm.dev_kvm.error }}"

- name: Only the libvirt part
  kvm_host_probe:
    gather: [libvirt]
  register: libvirt_probe
"""

RETURN = r"""
probe:
  description: The gathered facts; only the groups asked for in I(gather) are present.
  returned: always
  type: dict
  contains:
    kvm:
      description: CPU, kernel modules and /dev/kvm.
      returned: when C(kvm) is gathered
      type: dict
      contains:
        cpu_vendor:
          description: C(vendor_id) of /proc/cpuinfo (GenuineIntel, AuthenticAMD...), or null.
          type: str
        vt_flags:
          description: Sorted virtualization flags found (C(vmx), C(svm)); empty when none.
          type: list
          elements: str
        modules:
          description:
            - C(loaded), C(builtin) or C(absent) for C(kvm), C(kvm_intel), C(kvm_amd), and for any
              other C(kvm_*) module present in /sys/module (for example C(kvm_pvm)).
          type: dict
          sample: {"kvm": "builtin", "kvm_intel": "absent", "kvm_amd": "absent"}
        dev_kvm:
          description: State of /dev/kvm.
          type: dict
          sample:
            exists: true
            char_device: true
            mode: "0660"
            owner: root
            group: kvm
            api_version: 12
            create_vm: true
            error: null
        usable:
          description: True when KVM_GET_API_VERSION returned 12 and KVM_CREATE_VM succeeded.
          type: bool
    libvirt:
      description: libvirt daemon layout and configuration entry points.
      returned: when C(libvirt) is gathered
      type: dict
      contains:
        systemd:
          description: Whether systemd is the running init (/run/systemd/system exists).
          type: bool
        units:
          description:
            - For each libvirt unit, C(present) (unit file found), C(enabled) and C(active) as
              printed by systemctl. C(unknown) when systemd is not running or systemctl could not
              be run; C(not-found) when the unit file is absent.
          type: dict
          sample: {"libvirtd.service": {"present": true, "enabled": "enabled", "active": "active"}}
        layout:
          description:
            - C(modular) when virtqemud (socket or service) is enabled or active and
              libvirtd.service is neither; else C(socket) when libvirtd.socket is present and not
              masked (monolithic libvirtd with socket activation, the TCP listener is
              libvirtd-tcp.socket); else C(classic) when libvirtd.service or a libvirtd binary is
              present; else C(none).
          type: str
        defaults_file:
          description: The daemon defaults file found, or null.
          type: str
          sample: /etc/default/libvirtd
        defaults_args:
          description: Unquoted LIBVIRTD_ARGS (libvirtd_opts for libvirt-bin) there, or null.
          type: str
          sample: --timeout 120
        daemon_version:
          description: Version printed by C(libvirtd --version) or C(virtqemud --version).
          type: str
          sample: 9.0.0
        apparmor:
          description: AppArmor state and the libvirt-qemu abstraction's include points.
          type: dict
          sample:
            enabled: true
            parser: true
            abstraction: true
            dropin_dir: false
            local_include: true
            rules:
              - file: /etc/apparmor.d/local/abstractions/libvirt-qemu
                rule: "owner /var/lib/one/** rw,"
    config:
      description:
        - For qemu.conf, libvirtd.conf, virtqemud.conf and virtproxyd.conf, C(path), C(exists),
          C(keys) (the active settings, parsed as int, str or list of str; null when the file cannot
          be read), C(invalid) (keys whose value does not parse), C(syntax_error) (the first
          C(line) and C(message) libvirt's parser would stop at, or null) and C(error).
      returned: when C(config) is gathered
      type: dict
      sample:
        qemu.conf:
          path: /etc/libvirt/qemu.conf
          exists: true
          keys: {"dynamic_ownership": 0, "user": "oneadmin"}
          invalid: []
          syntax_error: null
          error: null
    accounts:
      description:
        - C(user) (name, uid, gid, primary group, home, shell; null when absent), C(user_groups)
          (every group the user is in, primary included), C(groups) (gid and members of each of
          I(groups), null when absent) and C(home) (the home directory's owner, group and mode).
      returned: when C(accounts) is gathered
      type: dict
    packages:
      description:
        - C(daemon_version) (libvirtd, else virtqemud), C(qemu_system) (sorted paths of
          qemu-system-* and qemu-kvm found), and the paths of C(qemu_img), C(ruby), C(rsync)
          (null when not found).
      returned: when C(packages) is gathered
      type: dict
    listen:
      description:
        - C(sockets), the TCP sockets in LISTEN state on ports 16509 (tcp) and 16514 (tls), from
          /proc/net/tcp and /proc/net/tcp6, as C(address), C(port), C(family); null with C(error)
          when neither file can be read.
      returned: when C(listen) is gathered
      type: dict
    devices:
      description: Like C(kvm.dev_kvm) without the ioctls, for /dev/net/tun and /dev/vhost-net.
      returned: when C(devices) is gathered
      type: dict
    access:
      description:
        - C(kvm_as_user) (C(user), C(evaluated), C(groups), C(api_version), C(error)) is
          /dev/kvm opened and asked for its API version as I(user); C(evaluated) is false, with
          the reason in C(error), when not run as root (or as I(user)).
        - C(sockets), the libvirt read-write unix sockets (/run/libvirt/libvirt-sock,
          /run/libvirt/virtqemud-sock) with C(exists), C(socket), C(owner), C(group), C(mode).
        - C(polkit), the polkit rules files that mention org.libvirt.unix.manage, as C(file) and
          the C(groups) they test with isInGroup().
      returned: when C(access) is gathered
      type: dict
    identity:
      description:
        - The sources of libvirt's host UUID besides the C(host_uuid) key of the daemon's
          configuration; C(dmi) (the SMBIOS product_uuid files libvirt reads, in its order) and
          C(machine_id), each as C(path), C(value) (stripped, or null) and C(error).
      returned: when C(identity) is gathered
      type: dict
    errors:
      description: 'What could not be read and why ("/etc/libvirt/qemu.conf: Permission denied").'
      returned: always
      type: list
      elements: str
expect:
  description: The I(expect) option, unchanged.
  returned: always
  type: dict
"""

import contextlib
import fcntl
import grp
import ipaddress
import json
import os
import pwd
import re
import select
import signal
import stat
import sys
import time

from ansible.module_utils.basic import AnsibleModule

GATHER_CHOICES = (
    "kvm",
    "libvirt",
    "config",
    "accounts",
    "packages",
    "listen",
    "devices",
    "access",
    "identity",
)
DEFAULT_GATHER = ("kvm", "libvirt")
KVM_MODULES = ("kvm", "kvm_intel", "kvm_amd")
KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_API_VERSION = 12

UNITS = (
    "libvirtd.service",
    "libvirtd.socket",
    "libvirtd-ro.socket",
    "libvirtd-admin.socket",
    "libvirtd-tcp.socket",
    "libvirtd-tls.socket",
    "virtqemud.service",
    "virtqemud.socket",
    "virtproxyd.service",
    "virtproxyd.socket",
    "virtproxyd-tcp.socket",
    "virtproxyd-tls.socket",
)
UNIT_DIRS = (
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
)
ENABLED_STATES = ("enabled", "enabled-runtime", "linked", "linked-runtime", "alias")
ACTIVE_STATES = ("active", "activating", "reloading")
MASKED_STATES = ("masked", "masked-runtime")

# (path, variable holding the daemon arguments)
DEFAULTS_FILES = (
    ("/etc/default/libvirtd", "LIBVIRTD_ARGS"),
    ("/etc/default/libvirt-bin", "libvirtd_opts"),
    ("/etc/sysconfig/libvirtd", "LIBVIRTD_ARGS"),
)
AA_ABSTRACTION = "/etc/apparmor.d/abstractions/libvirt-qemu"
AA_ENABLED = "/sys/module/apparmor/parameters/enabled"
BIN_DIRS = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
LIBVIRTD_DIRS = ("/usr/sbin", "/usr/bin")
# "not asked yet", as opposed to None, "asked and not installed"
UNSET = object()


def read_text(path):
    """Content of a file, or None when it cannot be read."""
    return read_text_why(path)[0]


def read_text_why(path):
    """(content, None), or (None, the reason it cannot be read)."""
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8", "replace"), None
    except OSError as exc:
        return None, _errtext(exc)


# ---------------------------------------------------------------------------------------------
# kvm
# ---------------------------------------------------------------------------------------------


def parse_cpuinfo(text):
    """Return (vendor, vt_flags) from /proc/cpuinfo text (vendor None when not found)."""
    vendor = None
    flags = set()
    for line in (text or "").splitlines():
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name = name.strip()
        if name == "vendor_id" and vendor is None:
            vendor = value.strip() or None
        elif name == "flags":
            flags.update(f for f in value.split() if f in ("vmx", "svm"))
    return vendor, sorted(flags)


def module_state(name, sys_module="/sys/module"):
    """'loaded' (loadable module), 'builtin' (built into the kernel) or 'absent'."""
    base = os.path.join(sys_module, name)
    if os.path.exists(os.path.join(base, "initstate")):
        return "loaded"
    if os.path.isdir(base):
        return "builtin"
    return "absent"


def kvm_module_states(sys_module="/sys/module"):
    """States of kvm, kvm_intel, kvm_amd, plus any other kvm_* module present."""
    names = list(KVM_MODULES)
    try:
        extra = sorted(n for n in os.listdir(sys_module) if n.startswith("kvm_"))
    except OSError:
        extra = []
    names.extend(n for n in extra if n not in names)
    return {n: module_state(n, sys_module) for n in names}


def _errtext(exc):
    return exc.strerror or str(exc)


def _user_name(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return str(uid)


def _group_name(gid):
    try:
        return grp.getgrgid(gid).gr_name
    except (KeyError, OverflowError):
        return str(gid)


def probe_dev_kvm(path="/dev/kvm"):
    """Stat /dev/kvm, open it and ask for the API version and an empty VM."""
    res = stat_path(path)
    del res["path"]
    res.update(api_version=None, create_vm=False)
    if not res["exists"]:
        return res
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        res["error"] = _errtext(exc)
        return res
    try:
        res["api_version"] = fcntl.ioctl(fd, KVM_GET_API_VERSION, 0)
        vm_fd = fcntl.ioctl(fd, KVM_CREATE_VM, 0)
        if vm_fd >= 0:
            os.close(vm_fd)
            res["create_vm"] = True
    except OSError as exc:
        res["error"] = _errtext(exc)
    finally:
        os.close(fd)
    return res


def gather_kvm(cpuinfo_path="/proc/cpuinfo", sys_module="/sys/module", dev_kvm="/dev/kvm"):
    vendor, vt_flags = parse_cpuinfo(read_text(cpuinfo_path))
    dev = probe_dev_kvm(dev_kvm)
    return {
        "cpu_vendor": vendor,
        "vt_flags": vt_flags,
        "modules": kvm_module_states(sys_module),
        "dev_kvm": dev,
        "usable": bool(dev["api_version"] == KVM_API_VERSION and dev["create_vm"]),
    }


# ---------------------------------------------------------------------------------------------
# libvirt
# ---------------------------------------------------------------------------------------------


def unit_present(unit, dirs=UNIT_DIRS):
    # lexists: a masked unit is a symlink to /dev/null and still counts as present.
    return any(os.path.lexists(os.path.join(d, unit)) for d in dirs)


def parse_systemctl_states(units, stdout):
    """Map units to the lines systemctl printed for them, or None if the count differs."""
    lines = [line.strip() for line in (stdout or "").splitlines() if line.strip()]
    if len(lines) != len(units):
        return None
    return {unit: lines[i] for i, unit in enumerate(units)}


def is_enabled(state):
    return state in ENABLED_STATES


def is_active(state):
    return state in ACTIVE_STATES


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
        u = get(unit)
        return is_enabled(u.get("enabled")) or is_active(u.get("active"))

    if (on("virtqemud.socket") or on("virtqemud.service")) and not on("libvirtd.service"):
        return "modular"
    sock = get("libvirtd.socket")
    if sock.get("present") and sock.get("enabled") not in MASKED_STATES:
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


def apparmor_includes(text):
    """Return (dropin_dir, local_include) for the libvirt-qemu abstraction's text.

    AppArmor treats '#include <...>' as an include (legacy syntax), so it counts; '# include' with
    a space is a comment.
    """
    dropin = local = False
    rx = re.compile(r"^\s*(?:#include|include)\s+(?:if\s+exists\s+)?[<\"]([^>\"]+)[>\"]")
    for line in (text or "").splitlines():
        m = rx.match(line)
        if not m:
            continue
        target = m.group(1).rstrip("/")
        if target == "abstractions/libvirt-qemu.d":
            dropin = True
        elif target == "local/abstractions/libvirt-qemu":
            local = True
    return dropin, local


def apparmor_owner_rules(text):
    """The active 'owner PATH/** rw...,' rules of an AppArmor fragment."""
    rx = re.compile(r"^\s*(owner\s+\S+/\*\*\s+[rwkl]*w[rwkl]*\s*,)")
    return [m.group(1) for m in (rx.match(line) for line in (text or "").splitlines()) if m]


def gather_apparmor(module, enabled_path=AA_ENABLED, abstraction=AA_ABSTRACTION, errors=None):
    text = read_text(abstraction)
    dropin, local = apparmor_includes(text)
    enabled = read_text(enabled_path)
    rules = []
    dropin_dir = abstraction + ".d"
    try:
        dropins = sorted(os.path.join(dropin_dir, n) for n in os.listdir(dropin_dir))
    except OSError:
        dropins = []
    local_file = os.path.join(
        os.path.dirname(os.path.dirname(abstraction)),
        "local",
        "abstractions",
        os.path.basename(abstraction),
    )
    for path in [abstraction, local_file, *dropins]:
        content, why = read_text_why(path)
        if content is None and errors is not None and os.path.exists(path):
            errors.append("%s: %s" % (path, why))
        rules.extend({"file": path, "rule": r} for r in apparmor_owner_rules(content))
    return {
        "enabled": bool(enabled and enabled.strip().upper().startswith("Y")),
        "parser": module.get_bin_path("apparmor_parser", opt_dirs=BIN_DIRS) is not None,
        "abstraction": os.path.isfile(abstraction),
        "dropin_dir": dropin,
        "local_include": local,
        "rules": rules,
    }


def run(module, args):
    """(rc, stdout) of a command given as an argument list; (None, "") when it cannot run."""
    try:
        rc, out, _err = module.run_command(
            args,
            expand_user_and_vars=False,
            errors="surrogate_or_replace",
            handle_exceptions=False,
        )
    except Exception:
        return None, ""
    return rc, out or ""


def _systemctl_states(module, systemctl, verb, units):
    """States printed by one 'systemctl VERB unit...' call (one call per unit if misaligned)."""
    _rc, out = run(module, [systemctl, verb, *units])
    states = parse_systemctl_states(units, out)
    if states is not None:
        return states
    states = {}
    for unit in units:
        _rc, out = run(module, [systemctl, verb, unit])
        lines = [line.strip() for line in out.splitlines() if line.strip()]
        states[unit] = lines[0] if lines else "unknown"
    return states


def gather_unit_states(module, systemd, dirs=UNIT_DIRS):
    """present/enabled/active of every libvirt unit."""
    units = {}
    for unit in UNITS:
        present = unit_present(unit, dirs)
        state = "unknown" if present or not systemd else "not-found"
        units[unit] = {"present": present, "enabled": state, "active": state}
    queried = [u for u in UNITS if units[u]["present"]]
    systemctl = module.get_bin_path("systemctl", opt_dirs=BIN_DIRS) if systemd else None
    if not queried or systemctl is None:
        return units
    enabled = _systemctl_states(module, systemctl, "is-enabled", queried)
    active = _systemctl_states(module, systemctl, "is-active", queried)
    for unit in queried:
        units[unit]["enabled"] = enabled.get(unit, "unknown")
        units[unit]["active"] = active.get(unit, "unknown")
    return units


def daemon_version(module):
    """Version printed by 'libvirtd --version', else 'virtqemud --version', else None."""
    for name in ("libvirtd", "virtqemud"):
        path = module.get_bin_path(name, opt_dirs=BIN_DIRS)
        if path is None:
            continue
        rc, out = run(module, [path, "--version"])
        version = parse_daemon_version(out) if rc == 0 else None
        if version:
            return version
    return None


def gather_libvirt(module, version=UNSET, errors=None):
    systemd = os.path.isdir("/run/systemd/system")
    units = gather_unit_states(module, systemd)
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


# ---------------------------------------------------------------------------------------------
# config: the active keys of the libvirt configuration files
# ---------------------------------------------------------------------------------------------

CONF_FILES = (
    ("qemu.conf", "/etc/libvirt/qemu.conf"),
    ("libvirtd.conf", "/etc/libvirt/libvirtd.conf"),
    ("virtqemud.conf", "/etc/libvirt/virtqemud.conf"),
    ("virtproxyd.conf", "/etc/libvirt/virtproxyd.conf"),
)
_CONF_KEY = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")
_CONF_STRING = re.compile(r"\s*(\"[^\"\n]*\"|'[^'\n]*')")
_CONF_INT = re.compile(r"\s*([-+]?\d+)")
_CONF_END = re.compile(r"\s*;?\s*(#.*)?$", re.S)


def parse_conf_value(text):
    """A libvirt value (int, "string" or [list of strings]); raises ValueError when invalid.

    Kept small on purpose (kvm_host_conf.py has the full parser; modules cannot import each
    other): triple-quoted strings and nested lists are not used in qemu.conf/libvirtd.conf.
    """
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or _CONF_END.match(text, end + 1) is None:
            raise ValueError("list is not closed with ]")
        body = text[1:end]
        items = []
        pos = 0
        while True:
            m = _CONF_STRING.match(body, pos)
            if m is None:
                if body[pos:].strip():
                    raise ValueError("expecting a quoted string in the list")
                break
            items.append(m.group(1)[1:-1])
            pos = m.end()
            rest = body[pos:].lstrip()
            if not rest:
                break
            if not rest.startswith(","):
                raise ValueError("expecting a separator in list")
            pos = len(body) - len(rest) + 1
        return items
    m = _CONF_STRING.match(text) or _CONF_INT.match(text)
    if m is None or _CONF_END.match(text, m.end()) is None:
        raise ValueError("expecting a value")
    value = m.group(1)
    return int(value) if value[0] not in "\"'" else value[1:-1]


def parse_conf(text):
    """(keys, invalid): the active settings of a libvirt config file (the last one wins)."""
    keys = {}
    invalid = []
    pending = None
    for line in (text or "").splitlines():
        if pending is not None:  # a list spanning lines
            pending[1].append(line.split("#", 1)[0] if '"' not in line else line)
            if "]" not in line:
                continue
            key, parts = pending
            pending = None
            value_text = " ".join(parts)
        else:
            m = _CONF_KEY.match(line)
            if not m:
                continue
            key, value_text = m.group(1), m.group(2)
            if value_text.lstrip().startswith("[") and "]" not in value_text:
                pending = (key, [value_text])
                continue
        try:
            keys[key] = parse_conf_value(value_text)
            if key in invalid:
                invalid.remove(key)
        except ValueError:
            keys.pop(key, None)
            invalid.append(key)
    if pending is not None:
        invalid.append(pending[0])
    return keys, invalid


_CONF_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_CONF_NUMBER = re.compile(r"[-+]?[0-9]+")


class ConfSyntaxError(Exception):
    def __init__(self, line, message):
        Exception.__init__(self, message)
        self.line = line
        self.message = message


class _ConfScanner(object):
    """libvirt's virconf grammar, as far as a restart cares: ``name = value`` statements
    separated by newlines or ';', values int, "string", 'string', \"\"\"string\"\"\" or
    [list, of, them], '#' comments. Stops at the first error, like libvirt does."""

    def __init__(self, text):
        self.text = text
        self.pos = 0

    def line(self):
        return self.text.count("\n", 0, self.pos) + 1

    def fail(self, message):
        raise ConfSyntaxError(self.line(), message)

    def peek(self):
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_blanks(self):
        while self.peek() in (" ", "\t", "\r") and self.peek():
            self.pos += 1

    def skip_comment(self):
        if self.peek() == "#":
            end = self.text.find("\n", self.pos)
            self.pos = len(self.text) if end < 0 else end

    def skip_space(self):
        """Blanks, newlines and comments (inside lists and between statements)."""
        while True:
            self.skip_blanks()
            self.skip_comment()
            if self.peek() == "\n":
                self.pos += 1
                continue
            return

    def string(self):
        if self.text.startswith('"""', self.pos):
            end = self.text.find('"""', self.pos + 3)
            if end < 0:
                self.fail('unterminated """ string')
            self.pos = end + 3
            return
        quote = self.peek()
        self.pos += 1
        while self.peek() not in (quote, "\n", ""):
            self.pos += 1
        if self.peek() != quote:
            self.fail("unterminated string")
        self.pos += 1

    def scalar(self):
        if self.peek() in ("'", '"'):
            self.string()
            return
        m = _CONF_NUMBER.match(self.text, self.pos)
        if m is None:
            self.fail("expecting a value")
        self.pos = m.end()

    def value(self):
        if self.peek() != "[":
            self.scalar()
            return
        start = self.line()
        self.pos += 1
        self.skip_space()
        while self.peek() != "]":
            if not self.peek():
                raise ConfSyntaxError(start, "list is not closed with ]")
            self.scalar()
            self.skip_space()
            if self.peek() == ",":
                self.pos += 1
                self.skip_space()
            elif self.peek() not in ("]", ""):
                self.fail("expecting a separator in list")
        self.pos += 1

    def statement(self):
        m = _CONF_NAME.match(self.text, self.pos)
        if m is None:
            self.fail("expecting a name")
        self.pos = m.end()
        self.skip_blanks()
        if self.peek() != "=":
            self.fail("expecting an assignment")
        self.pos += 1
        self.skip_blanks()
        self.value()
        self.skip_blanks()
        self.skip_comment()
        if self.peek() not in ("\n", ";", ""):
            self.fail("expecting a separator")

    def check(self):
        while True:
            self.skip_space()
            if self.peek() == ";":
                self.pos += 1
                continue
            if not self.peek():
                return
            self.statement()


def conf_syntax_error(text):
    """{"line", "message"} of the first syntax error libvirt would stop at, or None."""
    try:
        _ConfScanner(text or "").check()
    except ConfSyntaxError as exc:
        return {"line": exc.line, "message": exc.message}
    return None


def gather_config(errors, files=CONF_FILES):
    result = {}
    for name, path in files:
        entry = {
            "path": path,
            "exists": os.path.exists(path),
            "keys": None,
            "invalid": [],
            "syntax_error": None,
            "error": None,
        }
        if entry["exists"]:
            text, why = read_text_why(path)
            if text is None:
                entry["error"] = why
                errors.append("%s: %s" % (path, why))
            else:
                entry["keys"], entry["invalid"] = parse_conf(text)
                entry["syntax_error"] = conf_syntax_error(text)
        result[name] = entry
    return result


# ---------------------------------------------------------------------------------------------
# accounts
# ---------------------------------------------------------------------------------------------


def stat_path(path):
    """exists, char_device, owner, group, mode and error of a path (symlinks followed)."""
    res = {
        "path": path,
        "exists": False,
        "char_device": False,
        "owner": None,
        "group": None,
        "mode": None,
        "error": None,
    }
    try:
        st = os.stat(path)
    except OSError as exc:
        res["error"] = _errtext(exc)
        return res
    res.update(
        exists=True,
        char_device=stat.S_ISCHR(st.st_mode),
        owner=_user_name(st.st_uid),
        group=_group_name(st.st_gid),
        mode="%04o" % stat.S_IMODE(st.st_mode),
    )
    return res


def gather_accounts(user, groups, getpwnam=pwd.getpwnam, getgrall=grp.getgrall):
    try:
        entry = getpwnam(user)
    except KeyError:
        entry = None
    all_groups = getgrall()
    by_name = {g.gr_name: g for g in all_groups}
    result = {"user": None, "user_groups": [], "groups": {}, "home": None}
    for name in groups:
        g = by_name.get(name)
        result["groups"][name] = (
            None if g is None else {"gid": g.gr_gid, "members": sorted(g.gr_mem)}
        )
    if entry is None:
        return result
    primary = next((g.gr_name for g in all_groups if g.gr_gid == entry.pw_gid), None)
    result["user"] = {
        "name": entry.pw_name,
        "uid": entry.pw_uid,
        "gid": entry.pw_gid,
        "primary_group": primary,
        "home": entry.pw_dir,
        "shell": entry.pw_shell,
    }
    names = {g.gr_name for g in all_groups if user in g.gr_mem}
    if primary is not None:
        names.add(primary)
    result["user_groups"] = sorted(names)
    result["home"] = stat_path(entry.pw_dir)
    return result


# ---------------------------------------------------------------------------------------------
# packages
# ---------------------------------------------------------------------------------------------

QEMU_DIRS = ("/usr/libexec",)  # RHEL's qemu-kvm lives there


def search_dirs(path_env):
    dirs = []
    for d in (path_env or "").split(os.pathsep) + BIN_DIRS + list(QEMU_DIRS):
        if d and d not in dirs:
            dirs.append(d)
    return dirs


def find_qemu_system(dirs):
    """Sorted paths of the executable qemu-system-* (and qemu-kvm) in dirs."""
    found = set()
    seen = set()
    for d in dirs:
        # /bin is /usr/bin on merged-/usr systems: list each real directory once.
        real = os.path.realpath(d)
        if real in seen:
            continue
        seen.add(real)
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            if name.startswith("qemu-system-") or name == "qemu-kvm":
                path = os.path.join(d, name)
                if os.path.isfile(path) and os.access(path, os.X_OK):
                    found.add(path)
    return sorted(found)


def find_program(name, dirs):
    for d in dirs:
        path = os.path.join(d, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def gather_packages(module, version=UNSET):
    dirs = search_dirs(os.environ.get("PATH"))
    return {
        "daemon_version": daemon_version(module) if version is UNSET else version,
        "qemu_system": find_qemu_system(dirs),
        "qemu_img": find_program("qemu-img", dirs),
        "ruby": find_program("ruby", dirs),
        "rsync": find_program("rsync", dirs),
    }


# ---------------------------------------------------------------------------------------------
# listen: TCP listeners on libvirt's ports
# ---------------------------------------------------------------------------------------------

LIBVIRT_PORTS = (16509, 16514)
TCP_LISTEN = "0A"


def _proc_net_address(text, byteorder=sys.byteorder):
    """The address of /proc/net/tcp{,6}: 32-bit words printed in host byte order."""
    raw = b""
    for i in range(0, len(text), 8):
        word = bytes.fromhex(text[i : i + 8])
        raw += word[::-1] if byteorder == "little" else word
    return str(ipaddress.ip_address(raw))


def parse_proc_net_tcp(text, family, ports=LIBVIRT_PORTS, byteorder=sys.byteorder):
    """Sockets in LISTEN state on one of ports, from /proc/net/tcp or /proc/net/tcp6 text."""
    sockets = []
    for line in (text or "").splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != TCP_LISTEN:
            continue
        address, _sep, port_hex = fields[1].partition(":")
        try:
            port = int(port_hex, 16)
            if port not in ports:
                continue
            if len(address) != (8 if family == "ipv4" else 32):
                continue
            host = _proc_net_address(address, byteorder)
        except ValueError:
            continue
        sockets.append({"address": host, "port": port, "family": family})
    return sockets


def gather_listen(errors, files=(("/proc/net/tcp", "ipv4"), ("/proc/net/tcp6", "ipv6"))):
    sockets = []
    read_any = False
    reasons = []
    for path, family in files:
        text, why = read_text_why(path)
        if text is None:
            # No tcp6 on a kernel without IPv6 is normal; only say why when nothing was read.
            reasons.append("%s: %s" % (path, why))
            continue
        read_any = True
        sockets.extend(parse_proc_net_tcp(text, family))
    if not read_any:
        errors.extend(reasons)
        return {"sockets": None, "error": "; ".join(reasons)}
    return {"sockets": sockets, "error": None}


# ---------------------------------------------------------------------------------------------
# access: /dev/kvm as the QEMU user, the libvirt unix sockets, polkit
# ---------------------------------------------------------------------------------------------

LIBVIRT_SOCKETS = ("/run/libvirt/libvirt-sock", "/run/libvirt/virtqemud-sock")
POLKIT_DIRS = ("/etc/polkit-1/rules.d", "/usr/share/polkit-1/rules.d")
POLKIT_ACTION = "org.libvirt.unix.manage"
_POLKIT_GROUP = re.compile(r"isInGroup\(\s*[\"']([^\"']+)[\"']\s*\)")
KVM_AS_USER_TIMEOUT = 5.0


def _kvm_api_version(path):
    """{"api_version": n} or {"error": why} for open(path) + KVM_GET_API_VERSION."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return {"error": _errtext(exc)}
    try:
        return {"api_version": fcntl.ioctl(fd, KVM_GET_API_VERSION, 0)}
    except OSError as exc:
        return {"error": _errtext(exc)}
    finally:
        os.close(fd)


def _child_probe(write_fd, ids, path):
    """In the forked child: become the user (when ids is given), probe, report, never return."""
    answer = {"error": "the probe process failed"}
    try:
        if ids is not None:
            uid, gid, gids = ids
            # Order matters: the groups and gid can only be changed while still root.
            os.setgroups(gids)
            os.setgid(gid)
            os.setuid(uid)
        answer = _kvm_api_version(path)
    except BaseException as exc:  # anything, so that the parent gets a reason
        answer = {
            "error": "cannot switch to the user: %s" % (getattr(exc, "strerror", None) or exc)
        }
    finally:
        try:
            os.write(write_fd, json.dumps(answer).encode("utf-8"))
        finally:
            # _exit: no atexit handlers, no Ansible cleanup, no buffered output from the child.
            os._exit(0)


def _read_answer(read_fd, pid, timeout):
    """The child's JSON answer within timeout; the child is killed if late, always reaped."""
    deadline = time.monotonic() + timeout
    data = b""
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return {"error": "no answer within %g s" % timeout}
            ready, _w, _x = select.select([read_fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(read_fd, 4096)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(read_fd)
        # The child is ours until reaped, so its pid cannot have been reused: kill is safe, and
        # a no-op for a child that has already exited.
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    try:
        answer = json.loads(data.decode("utf-8"))
    except ValueError:
        return {"error": "the probe process gave no answer"}
    return answer if isinstance(answer, dict) else {"error": "the probe process gave no answer"}


def probe_kvm_as_user(user, path="/dev/kvm", timeout=KVM_AS_USER_TIMEOUT, euid=None):
    """Open /dev/kvm and ask its API version as user, in a child process with its identity.

    Root proves the user's own access by dropping to its uid, gid and supplementary groups
    (what libvirt does before it execs QEMU); any other caller can only test itself.
    """
    res = {"user": user, "evaluated": False, "groups": [], "api_version": None, "error": None}
    euid = os.geteuid() if euid is None else euid
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        res["error"] = "no user %s" % user
        return res
    if euid == 0:
        gids = sorted(set(os.getgrouplist(user, entry.pw_gid)))
        ids = (entry.pw_uid, entry.pw_gid, gids)
    elif euid == entry.pw_uid:
        gids = sorted({os.getegid(), *os.getgroups()})
        ids = None
    else:
        res["error"] = "not evaluated: needs root"
        return res
    res["groups"] = sorted(_group_name(g) for g in gids)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child_probe(write_fd, ids, path)
    os.close(write_fd)
    answer = _read_answer(read_fd, pid, timeout)
    res["evaluated"] = True
    res["api_version"] = answer.get("api_version")
    res["error"] = answer.get("error")
    return res


def stat_socket(path):
    res = stat_path(path)
    del res["char_device"]
    try:
        res["socket"] = stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        res["socket"] = False
    return res


def polkit_rules(dirs=POLKIT_DIRS, errors=None):
    """Rules files about libvirt's manage action and the groups they test."""
    rules = []
    for d in dirs:
        try:
            names = sorted(n for n in os.listdir(d) if n.endswith(".rules"))
        except OSError:
            continue
        for name in names:
            path = os.path.join(d, name)
            text, why = read_text_why(path)
            if text is None:
                if errors is not None:
                    errors.append("%s: %s" % (path, why))
                continue
            if POLKIT_ACTION in text:
                rules.append({"file": path, "groups": sorted(set(_POLKIT_GROUP.findall(text)))})
    return rules


def gather_access(user, errors, sockets=LIBVIRT_SOCKETS, polkit_dirs=POLKIT_DIRS):
    return {
        "kvm_as_user": probe_kvm_as_user(user),
        "sockets": {path: stat_socket(path) for path in sockets},
        "polkit": polkit_rules(polkit_dirs, errors),
    }


# ---------------------------------------------------------------------------------------------
# identity: where libvirt takes the host UUID from when host_uuid is not set
# ---------------------------------------------------------------------------------------------

# libvirt's getDMISystemUUID order (host_uuid_source = "smbios", the default).
DMI_UUID_FILES = ("/sys/devices/virtual/dmi/id/product_uuid", "/sys/class/dmi/id/product_uuid")
MACHINE_ID = "/etc/machine-id"


def read_source(path):
    text, why = read_text_why(path)
    return {"path": path, "value": None if text is None else text.strip(), "error": why}


def gather_identity(dmi_files=DMI_UUID_FILES, machine_id=MACHINE_ID):
    return {"dmi": [read_source(p) for p in dmi_files], "machine_id": read_source(machine_id)}


# ---------------------------------------------------------------------------------------------
# devices
# ---------------------------------------------------------------------------------------------

DEVICES = ("/dev/net/tun", "/dev/vhost-net")


def gather_devices(paths=DEVICES):
    return {path: stat_path(path) for path in paths}


def main():
    module = AnsibleModule(
        argument_spec={
            "gather": {
                "type": "list",
                "elements": "str",
                "choices": list(GATHER_CHOICES),
                "default": list(DEFAULT_GATHER),
            },
            "user": {"type": "str", "default": "oneadmin"},
            "groups": {
                "type": "list",
                "elements": "str",
                "default": ["kvm", "libvirt", "libvirtd"],
            },
            "expect": {"type": "dict", "default": {}},
        },
        supports_check_mode=True,
    )
    gather = module.params["gather"] or []
    errors = []
    probe = {}
    # Both groups report the daemon version: run "libvirtd --version" once.
    version = daemon_version(module) if {"libvirt", "packages"} & set(gather) else UNSET
    if "kvm" in gather:
        probe["kvm"] = gather_kvm()
    if "libvirt" in gather:
        probe["libvirt"] = gather_libvirt(module, version, errors)
    if "config" in gather:
        probe["config"] = gather_config(errors)
    if "accounts" in gather:
        probe["accounts"] = gather_accounts(module.params["user"], module.params["groups"])
    if "packages" in gather:
        probe["packages"] = gather_packages(module, version)
    if "listen" in gather:
        probe["listen"] = gather_listen(errors)
    if "devices" in gather:
        probe["devices"] = gather_devices()
    if "access" in gather:
        probe["access"] = gather_access(module.params["user"], errors)
    if "identity" in gather:
        probe["identity"] = gather_identity()
    probe["errors"] = errors
    module.exit_json(changed=False, probe=probe, expect=module.params["expect"] or {})


if __name__ == "__main__":
    main()
