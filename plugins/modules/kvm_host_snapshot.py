#!/usr/bin/python
"""kvm_host_snapshot: keep libvirt's configuration as it was, to roll back a failed restart."""

# Ansible module conventions: the documentation strings come before the imports; the code runs
# on the target's python3 (3.6 or later), standard library only.
DOCUMENTATION = r"""
---
module: kvm_host_snapshot
short_description: Save a set of configuration paths, or put them back exactly as saved
description:
  - C(state=saved) copies every existing path matching I(paths) (shell globs; files, symlinks and
    directory trees, with modes, owners and times) under I(dest), and records which paths
    matched. An earlier snapshot in I(dest) is replaced. It reports C(changed=false), as the
    snapshot is the run's own bookkeeping under /run (tmpfs), not a change to the host.
  - C(state=restored) makes the paths exactly what was saved; saved paths are copied back,
    replacing what is there now, and paths matching I(paths) now that did not exist when the
    snapshot was taken (a unit drop-in created by the run) are removed.
  - With I(service), C(state=saved) first compares the earlier snapshot with the files now; a
    path that changed since then, while I(service) has been running from before the change,
    is configuration the daemon has never read (an earlier run was interrupted between its
    change and its restart). It is returned in I(restart_pending), and the earlier snapshot is
    kept, as it is what the running daemon uses, so it stays the one to roll back to.
  - Reads, but does not save or restore, in check mode.
author:
  - kvmprep maintainers (!UNKNOWN)
options:
  paths:
    description: Paths or shell globs to save; only needed with C(state=saved).
    type: list
    elements: str
    default: []
  dest:
    description: Directory that holds the snapshot, an absolute path.
    type: str
    required: true
  service:
    description:
      - The systemd unit of the daemon that reads these paths (C(state=saved)); empty skips the
        comparison.
    type: str
    default: ""
  state:
    description: Save, or restore.
    type: str
    choices: [saved, restored]
    default: saved
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
- name: Keep libvirt's configuration to roll back to
  kvmprep.kvm.kvm_host_snapshot:
    paths: [/etc/libvirt, /etc/default/libvirtd, "/etc/systemd/system/libvirtd*"]
    dest: /run/kvmprep/libvirt-snapshot

- name: Put it back
  kvmprep.kvm.kvm_host_snapshot:
    dest: /run/kvmprep/libvirt-snapshot
    state: restored
"""

RETURN = r"""
saved:
  description: The paths that existed and were saved (state=saved), or were put back.
  type: list
  returned: always
removed:
  description: Paths created after the snapshot and removed by the restore.
  type: list
  returned: always
restart_pending:
  description:
    - Files changed since the earlier snapshot that the running I(service) started before
      (C(state=saved) with I(service)); empty when there is nothing the daemon has not read.
  type: list
  returned: always
kvmprep_changes:
  description:
    - For kvmprep's change report; the snapshot is the run's own bookkeeping under /run, no
      change to the host (empty); a restore names what it put back.
  type: list
  elements: dict
  returned: always
"""

import glob
import hashlib
import json
import os
import shutil
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule

# dest is a str, not a path: the module does not expand ~ or $VAR in it.
ARGUMENT_SPEC = {
    "paths": {"type": "list", "elements": "str", "default": []},
    "dest": {"type": "str", "required": True},
    "state": {"type": "str", "choices": ["saved", "restored"], "default": "saved"},
    "service": {"type": "str", "default": ""},
}

MANIFEST = "manifest.json"
TREE = "tree"


def _expand(patterns):
    found = []
    for pattern in patterns:
        matches = glob.glob(pattern) if glob.has_magic(pattern) else [pattern]
        for path in sorted(matches):
            if os.path.lexists(path) and path not in found:
                found.append(path)
    return found


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def _copy(source, target):
    """Copy a file, symlink or tree with its metadata (owner included: the module runs as root)."""
    parent = os.path.dirname(target)
    if not os.path.isdir(parent):
        os.makedirs(parent, 0o700)
    if os.path.isdir(source) and not os.path.islink(source):
        shutil.copytree(source, target, symlinks=True)
        for root, dirs, files in os.walk(source):
            for name in ["", *dirs, *files]:
                here = os.path.join(root, name) if name else root
                there = os.path.join(target, os.path.relpath(here, source))
                _copy_owner(here, there)
    else:
        shutil.copy2(source, target, follow_symlinks=False)
        _copy_owner(source, target)


def _copy_owner(source, target):
    info = os.lstat(source)
    os.chown(target, info.st_uid, info.st_gid, follow_symlinks=False)


def save(patterns, dest):
    _remove(dest)
    os.makedirs(os.path.join(dest, TREE), 0o700)
    os.chmod(dest, 0o700)
    saved = _expand(patterns)
    for path in saved:
        _copy(path, os.path.join(dest, TREE, path.lstrip("/")))
    with open(os.path.join(dest, MANIFEST), "w") as handle:
        json.dump({"patterns": list(patterns), "saved": saved}, handle)
    return saved, []


def _leaves(path, root=None):
    """{path as on the host: (kind, digest)} of a file, link or tree under ``root`` (or /)."""
    found = {}
    base = path if root is None else os.path.join(root, path.lstrip("/"))
    if not os.path.lexists(base):
        return found
    walk = [(base, [], [""])] if not os.path.isdir(base) or os.path.islink(base) else os.walk(base)
    for here, _dirs, files in walk:
        for name in files:
            full = os.path.join(here, name) if name else here
            shown = os.path.join(path, os.path.relpath(full, base)) if full != base else path
            if os.path.islink(full):
                found[os.path.normpath(shown)] = ("link", os.readlink(full))
            else:
                with open(full, "rb") as handle:
                    found[os.path.normpath(shown)] = (
                        "file",
                        hashlib.sha256(handle.read()).hexdigest(),
                    )
    return found


def daemon_started(service, run=subprocess.run):
    """When the unit's main process started (epoch seconds), or None when it does not run."""
    # run is subprocess.run unless a test hands in another; the module's run_command is not
    # needed for one systemctl call with a fixed argument list.
    try:
        out = run(  # pylint: disable=ansible-bad-function
            ["systemctl", "show", "--property=MainPID", "--value", service],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            universal_newlines=True,
            check=False,
        ).stdout.strip()
        pid = int(out or 0)
        if pid <= 0:
            return None
        with open("/proc/{0}/stat".format(pid)) as handle:
            # The command name (field 2) may hold spaces: the fields after it are counted from ")".
            ticks = int(handle.read().rsplit(")", 1)[1].split()[19])
        # Both on the boot clock, to 10 ms: how long ago the process started. (/proc/stat's btime
        # is whole seconds: a file written just before a restart could look newer than it.)
        with open("/proc/uptime") as handle:
            uptime = float(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))


def pending_restart(dest, started):
    """Paths changed since the snapshot in ``dest`` after the daemon (started at ``started``)."""
    if started is None or not os.path.exists(os.path.join(dest, MANIFEST)):
        return []
    with open(os.path.join(dest, MANIFEST)) as handle:
        manifest = json.load(handle)
    tree = os.path.join(dest, TREE)
    before, now = {}, {}
    for path in manifest["saved"]:
        before.update(_leaves(path, tree))
    for path in _expand(manifest["patterns"]):
        now.update(_leaves(path))
    pending = []
    for path in sorted(set(before) | set(now)):
        if before.get(path) == now.get(path):
            continue
        # A removed file leaves its mark on the directory it was in.
        probe = path if os.path.lexists(path) else os.path.dirname(path)
        try:
            changed_at = os.lstat(probe).st_mtime
        except OSError:
            continue
        if changed_at > started:
            pending.append(path)
    return pending


def restore(dest):
    with open(os.path.join(dest, MANIFEST)) as handle:
        manifest = json.load(handle)
    saved = manifest["saved"]
    removed = [path for path in _expand(manifest["patterns"]) if path not in saved]
    for path in removed:
        _remove(path)
    for path in saved:
        _remove(path)
        _copy(os.path.join(dest, TREE, path.lstrip("/")), path)
    return saved, removed


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    dest = module.params["dest"]
    saving = module.params["state"] == "saved"
    pending = []
    if saving and module.params["service"]:
        try:
            pending = pending_restart(dest, daemon_started(module.params["service"]))
        except (OSError, ValueError, KeyError) as exc:
            module.warn("snapshot {0} unreadable, not compared: {1}".format(dest, exc))
    if module.check_mode:
        module.exit_json(
            changed=False, saved=[], removed=[], restart_pending=pending, kvmprep_changes=[]
        )
    try:
        if saving and pending:
            # The daemon still runs the earlier snapshot's configuration: keep that one.
            saved, removed = [], []
            changed = False
        elif saving:
            saved, removed = save(module.params["paths"], dest)
            changed = False
        else:
            saved, removed = restore(dest)
            changed = True
    except (OSError, ValueError, KeyError) as exc:
        module.fail_json(msg="snapshot {0}: {1}".format(dest, exc))
    report = (
        []
        if saving
        else [
            {
                "concern": "restart",
                "text": "libvirt did not come back: its configuration from before this run "
                "put back (%s)" % ", ".join(saved + removed),
            }
        ]
    )
    module.exit_json(
        changed=changed,
        saved=saved,
        removed=removed,
        restart_pending=pending,
        kvmprep_changes=report,
    )


if __name__ == "__main__":
    main()
