# -*- coding: utf-8 -*-
"""Saving libvirt's configuration before a run changes it, and putting it back exactly as saved:
kvm_host_snapshot (save, restore) and kvm_host_files (its ``snapshot`` option: saved in the
same call, before its first write) share it.

Standard library only, Python 3.6 syntax: runs on the host.
"""

import glob
import hashlib
import json
import os
import shutil
import subprocess
import time

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


def take(patterns, dest, service, check_mode, warn):
    """state=saved: the paths a daemon running ``service`` has not read yet (restart pending,
    compared with the earlier snapshot), and a new snapshot unless there are such paths (the
    earlier one is what the daemon runs, so it stays the one to roll back to) or in check mode.
    ``warn`` gets a message when the earlier snapshot cannot be read."""
    pending = []
    if service:
        try:
            pending = pending_restart(dest, daemon_started(service))
        except (OSError, ValueError, KeyError) as exc:
            warn("snapshot {0} unreadable, not compared: {1}".format(dest, exc))
    saved = []
    if not check_mode and not pending:
        saved, _removed = save(patterns, dest)
    return pending, saved
