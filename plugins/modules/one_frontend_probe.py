#!/usr/bin/python
"""one_frontend_probe: read-only facts about an OpenNebula front-end, in one call."""

# Ansible module conventions: the documentation strings come before the imports; the code runs
# on the front-end's python3 (3.6 or later), standard library only.
DOCUMENTATION = r"""
---
module: one_frontend_probe
short_description: Gather what kvmprep check judges on an OpenNebula front-end, in one call
description:
  - Reports the installed OpenNebula version (the remotes' C(VERSION)), the C(IM_MAD) and
    C(VM_MAD) sections of C(oned.conf) and C(monitord.conf) (parsed with one_frontend_conf's
    parser), C(SCRIPTS_REMOTE_DIR), the KVM driver's defaults in C(vmm_exec_kvm.conf) (C(OS)
    C(MACHINE), C(CPU_MODEL) C(MODEL), C(EMULATOR)) and C(QEMU_PROTOCOL) of C(kvmrc).
  - Reports a digest of the remotes tree (the sha256 of every file, links followed as
    C(onehost sync) copies them), oneadmin's account, SSH key, authorized_keys and known_hosts,
    and the front-end's SSH host keys, names and addresses (as one_frontend_ssh reports them).
  - Reports whether oned runs and when it started, and when C(oned.conf), C(monitord.conf) and
    C(vmm_exec_kvm.conf) last changed. oned reads them at start only, so a file changed after
    that is not what oned uses.
  - With I(peers), tests oneadmin's SSH hop front-end -> host to each of them, as the drivers
    make it (control ONE-008) - C(ssh <peer> true) as I(user), in BatchMode, four at a time
    while the rest is gathered (each 6 s at most, all 12 s), as kvm_host_probe's C(peers)
    group does host -> host.
  - Never changes anything; C(changed) is always false. What cannot be read is reported with
    the reason, never as a failure.
author:
  - kvmprep maintainers (!UNKNOWN)
options:
  user:
    description: The account OpenNebula runs as.
    type: str
    default: oneadmin
  etc_dir:
    description: OpenNebula's configuration directory.
    type: path
    default: /etc/one
  remotes_dir:
    description: OpenNebula's remotes on the front-end.
    type: path
    default: /var/lib/one/remotes
  gather:
    description:
      - C(all) gathers everything below. C(oned) gathers only C(oned) and the C(path) and
        C(mtime) of the files oned reads at start (C(oned.conf), C(monitord.conf),
        C(vmm_exec_kvm.conf)), for apply to tell whether oned runs with the files on disk.
    type: str
    choices: [all, oned]
    default: all
  names:
    description:
      - Names resolved on the front-end (with C(all)), all within 2 s; for C(kvmprep check),
        the OpenNebula names of the kvm hosts (control NET-001).
    type: list
    elements: str
    default: []
  peers:
    description:
      - The kvm hosts the SSH hop front-end -> host is tested to (with C(all)), by their
        inventory C(name) and the C(address) the drivers use (the name OpenNebula knows them
        by; empty, the C(name)). Above 32 nothing is tried.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: The host's name in the report.
        type: str
        required: true
      address:
        description: The name or address ssh connects to.
        type: str
        default: ""
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: linux
"""

EXAMPLES = r"""
- name: Probe the front-end
  kvmprep.kvm.one_frontend_probe:
  register: frontend
"""

RETURN = r"""
probe:
  description:
    - C(version) (null without a VERSION file); C(files), per file (C(oned.conf),
      C(monitord.conf), C(vmm_exec_kvm.conf), C(kvmrc)), its C(path), C(exists), C(mtime)
      (seconds since the epoch, a float; null when the file is missing or cannot be stat'ed)
      and C(error) (unreadable or unparsable, with the line).
    - C(drivers), per file, the C(IM_MAD) and C(VM_MAD) sections (keys upper-cased).
    - C(scripts_remote_dir) (oned.conf's value, null when unset); C(vmm_kvm) with C(machine),
      C(cpu_model), C(emulator) (null when unset); C(kvmrc) with C(qemu_protocol),
      C(libvirt_uri) and C(migrate_options).
    - C(monitord), C(probes_period), the sorted keys of monitord.conf's C(PROBES_PERIOD)
      (null when the file has none or cannot be parsed).
    - C(remotes), the digest of the remotes dir (as kvm_host_probe's C(one.remotes)).
    - C(accounts.user), oneadmin's C(uid), C(gid), C(home) (null when missing).
    - C(ssh), as kvm_host_probe's C(one.ssh).
    - C(oned), the oned process found in /proc by its name (the earliest started when there
      are several). C(running) is true, false, or null when /proc cannot be read; C(pid) and
      C(started) (seconds since the epoch, its starttime over SC_CLK_TCK plus the boot time of
      /proc/stat, whole-second precision at best) are null when it does not run; C(error)
      says why it could not be told, else null.
    - C(names), per name of I(names), how it resolves here, as kvm_host_probe's C(names)
      (C(addresses), C(loopback), C(error)); empty without I(names).
    - C(peers), as kvm_host_probe's C(peers) without ports (C(hosts), per name, C(address)
      and C(ssh) with C(ok), C(rc), C(message)); C(skipped) and C(ssh_skipped) say why
      nothing was tried.
  returned: always
  type: dict
"""

import os
import pwd

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_names import resolve_names
from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_oneadmin import (
    remotes_digest,
    ssh_state,
)
from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_probe_peers import (
    finish_peers,
    start_peers,
)
from ansible_collections.kvmprep.kvm.plugins.module_utils.one_frontend_syntax import (
    ConfError,
    read_values,
)

DRIVER_SECTIONS = ("IM_MAD", "VM_MAD")
ONED = "oned"  # the daemon's /proc/PID/comm
# The KVM driver's kvmrc moved from remotes/vmm/kvm (up to 4.x) to remotes/etc/vmm/kvm.
KVMRC_CANDIDATES = ("etc/vmm/kvm/kvmrc", "vmm/kvm/kvmrc")


def _mtime(path):
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def read_conf(path, fmt="one"):
    """(entry, values): the file's path, existence, mtime and error, and its parsed values."""
    entry = {"path": path, "exists": os.path.exists(path), "mtime": None, "error": None}
    if not entry["exists"]:
        return entry, None
    entry["mtime"] = _mtime(path)
    try:
        with open(path, "rb") as handle:
            text = handle.read().decode("utf-8", "surrogateescape")
        return entry, read_values(text, fmt)
    except OSError as exc:
        entry["error"] = exc.strerror or str(exc)
    except ConfError as exc:
        entry["error"] = str(exc)
    return entry, None


def _single(values, name):
    value = ((values or {}).get("settings") or {}).get(name)
    return value[-1] if isinstance(value, list) else value


def _vector(values, name, key):
    sections = ((values or {}).get("sections") or {}).get(name) or []
    return sections[-1].get(key) if sections else None


def read_version(remotes_dir):
    try:
        with open(os.path.join(remotes_dir, "VERSION")) as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def _boot_time(proc):
    with open(os.path.join(proc, "stat")) as handle:
        for line in handle:
            if line.startswith("btime "):
                return int(line.split()[1])
    raise ValueError("no btime in {0}/stat".format(proc))


def _process(proc, pid):
    """(state, starttime in clock ticks since boot) of an oned process, else None."""
    base = os.path.join(proc, pid)
    try:
        with open(os.path.join(base, "comm")) as handle:
            if handle.read().strip() != ONED:
                return None
        with open(os.path.join(base, "stat")) as handle:
            stat = handle.read()
    except (OSError, UnicodeDecodeError):
        return None  # gone meanwhile, or not ours to read
    # The name in parentheses may hold spaces: count the fields after its closing one.
    fields = stat.rpartition(")")[2].split()
    if len(fields) < 20 or not fields[19].isdigit():
        return None
    return fields[0], int(fields[19])


def oned_state(proc="/proc"):
    """Whether oned runs, its pid and start time (epoch seconds)."""
    state = {"running": None, "pid": None, "started": None, "error": None}
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
        boot = _boot_time(proc)
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError) as exc:
        state["error"] = "cannot read {0}: {1}".format(proc, exc)
        return state
    found = []
    for pid in pids:
        process = _process(proc, pid)
        # A zombie (Z) or dying (X) oned serves nothing.
        if process is not None and process[0] not in ("Z", "X"):
            found.append((process[1], int(pid)))
    state["running"] = bool(found)
    if found:
        # oned forks before it execs its drivers: the earliest is the daemon itself.
        starttime, pid = min(found)
        state["pid"] = pid
        state["started"] = boot + starttime / float(ticks)
    return state


# The files oned reads at start, by the name the probe reports them under.
ONED_READS = {
    "oned.conf": "oned.conf",
    "monitord.conf": "monitord.conf",
    "vmm_exec_kvm.conf": os.path.join("vmm_exec", "vmm_exec_kvm.conf"),
}


def gather_oned(etc_dir, proc="/proc"):
    """oned's state and the modification times of the files it reads at start, nothing else."""
    files = {}
    for name, rel in ONED_READS.items():
        path = os.path.join(etc_dir, rel)
        files[name] = {"path": path, "mtime": _mtime(path)}
    return {"oned": oned_state(proc), "files": files}


def gather(user, etc_dir, remotes_dir, run_command, proc="/proc", names=(), peers=()):
    # The SSH hops wait on the network: they run while the files are read.
    hops = start_peers(peers, user=user)
    probe = {"version": read_version(remotes_dir), "files": {}, "drivers": {}}
    parsed = {}
    for name in ("oned.conf", "monitord.conf"):
        probe["files"][name], parsed[name] = read_conf(os.path.join(etc_dir, name))
        sections = (parsed[name] or {}).get("sections") or {}
        probe["drivers"][name] = {s: sections.get(s, []) for s in DRIVER_SECTIONS}
    probe["scripts_remote_dir"] = _single(parsed["oned.conf"], "SCRIPTS_REMOTE_DIR")

    vmm_path = os.path.join(etc_dir, "vmm_exec", "vmm_exec_kvm.conf")
    probe["files"]["vmm_exec_kvm.conf"], vmm = read_conf(vmm_path)
    probe["vmm_kvm"] = {
        "machine": _vector(vmm, "OS", "MACHINE"),
        "cpu_model": _vector(vmm, "CPU_MODEL", "MODEL"),
        "emulator": _single(vmm, "EMULATOR"),
    }
    kvmrc_path = next(
        (
            os.path.join(remotes_dir, c)
            for c in KVMRC_CANDIDATES
            if os.path.exists(os.path.join(remotes_dir, c))
        ),
        os.path.join(remotes_dir, KVMRC_CANDIDATES[0]),
    )
    probe["files"]["kvmrc"], kvmrc = read_conf(kvmrc_path, "shell")
    probe["kvmrc"] = {
        "qemu_protocol": _single(kvmrc, "QEMU_PROTOCOL"),
        "libvirt_uri": _single(kvmrc, "LIBVIRT_URI"),
        "migrate_options": _single(kvmrc, "MIGRATE_OPTIONS"),
    }
    periods = ((parsed["monitord.conf"] or {}).get("sections") or {}).get("PROBES_PERIOD")
    probe["monitord"] = {
        "probes_period": sorted(periods[-1]) if periods else None,
    }

    probe["remotes"] = remotes_digest(remotes_dir, user)
    try:
        entry = pwd.getpwnam(user)
        probe["accounts"] = {
            "user": {"name": user, "uid": entry.pw_uid, "gid": entry.pw_gid, "home": entry.pw_dir}
        }
    except KeyError:
        probe["accounts"] = {"user": None}
    probe["ssh"] = ssh_state(user, run_command)
    probe["oned"] = oned_state(proc)
    probe["names"] = resolve_names(names)
    probe["peers"] = finish_peers(hops)
    return probe


def main():
    module = AnsibleModule(
        argument_spec={
            "user": {"type": "str", "default": "oneadmin"},
            "etc_dir": {"type": "path", "default": "/etc/one"},
            "remotes_dir": {"type": "path", "default": "/var/lib/one/remotes"},
            "gather": {"type": "str", "default": "all", "choices": ["all", "oned"]},
            "names": {"type": "list", "elements": "str", "default": []},
            "peers": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": {
                    "name": {"type": "str", "required": True},
                    "address": {"type": "str", "default": ""},
                },
            },
        },
        supports_check_mode=True,
    )
    params = module.params
    if params["gather"] == "oned":
        probe = gather_oned(params["etc_dir"])
    else:
        probe = gather(
            params["user"],
            params["etc_dir"],
            params["remotes_dir"],
            module.run_command,
            names=params["names"],
            peers=params["peers"],
        )
    module.exit_json(changed=False, probe=probe)


if __name__ == "__main__":
    main()
