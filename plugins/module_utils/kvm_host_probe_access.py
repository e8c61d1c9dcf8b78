# -*- coding: utf-8 -*-
"""kvm_host_probe's access group: /dev/kvm opened as the QEMU user (in a child process with
its identity), libvirt's unix sockets, the polkit rules about libvirt.
"""

import contextlib
import fcntl
import json
import os
import pwd
import re
import select
import signal
import stat
import time

from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_probe_common import (
    errtext,
    group_name,
    read_text_why,
    stat_path,
)
from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_probe_kvm import (
    KVM_GET_API_VERSION,
)

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
        return {"error": errtext(exc)}
    try:
        return {"api_version": fcntl.ioctl(fd, KVM_GET_API_VERSION, 0)}
    except OSError as exc:
        return {"error": errtext(exc)}
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
    res["groups"] = sorted(group_name(g) for g in gids)
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
