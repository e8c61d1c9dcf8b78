# -*- coding: utf-8 -*-
"""What every part of kvm_host_probe uses: reading files and stat results that never raise,
commands that never raise, where programs are looked for.

Standard library only, Python 3.6 syntax: runs on the host.
"""

import grp
import os
import pwd
import stat
import time

BIN_DIRS = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
QEMU_DIRS = ("/usr/libexec",)  # RHEL's qemu-kvm lives there
# "not asked yet", as opposed to None, "asked and not installed"
UNSET = object()
#: Seconds given to reading a child that has ended, whatever its deadline.
ENDED_GRACE = 1.0


def communicate_by(proc, deadline):
    """proc.communicate() until deadline (a time.monotonic() value), raising TimeoutExpired as it
    does. A child that has ended is read even after its deadline: the probe collects its
    children after gathering the rest, and on a busy machine that can be later than a deadline
    the child met (communicate with no time left raises before reading what is there)."""
    left = deadline - time.monotonic()
    if proc.poll() is not None:
        left = max(left, ENDED_GRACE)
    return proc.communicate(timeout=max(0.0, left))


def read_text(path):
    """Content of a file, or None when it cannot be read."""
    return read_text_why(path)[0]


def read_text_why(path):
    """(content, None), or (None, the reason it cannot be read)."""
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8", "replace"), None
    except OSError as exc:
        return None, errtext(exc)


def errtext(exc):
    return exc.strerror or str(exc)


def user_name(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return str(uid)


def group_name(gid):
    try:
        return grp.getgrgid(gid).gr_name
    except (KeyError, OverflowError):
        return str(gid)


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
        res["error"] = errtext(exc)
        return res
    res.update(
        exists=True,
        char_device=stat.S_ISCHR(st.st_mode),
        owner=user_name(st.st_uid),
        group=group_name(st.st_gid),
        mode="%04o" % stat.S_IMODE(st.st_mode),
    )
    return res


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


def search_dirs(path_env):
    dirs = []
    for d in (path_env or "").split(os.pathsep) + BIN_DIRS + list(QEMU_DIRS):
        if d and d not in dirs:
            dirs.append(d)
    return dirs


def find_program(name, dirs):
    for d in dirs:
        path = os.path.join(d, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None
