# -*- coding: utf-8 -*-
"""What every part of kvm_host_probe uses: reading files and stat results that never raise,
commands that never raise, where programs are looked for.

Standard library only, Python 3.6 syntax: runs on the host.
"""

import grp
import os
import pwd
import stat
import subprocess
import time

BIN_DIRS = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
QEMU_DIRS = ("/usr/libexec",)  # RHEL's qemu-kvm lives there
# "not asked yet", as opposed to None, "asked and not installed"
UNSET = object()
#: Seconds given to reading a child that has ended, whatever its deadline.
ENDED_GRACE = 1.0
#: Seconds a command started early (start()) may take before it counts as not answering.
STARTED_TIMEOUT = 60.0


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


class Started(object):
    """A command running while the probe gathers the rest: result() gives what run() would,
    (rc, stdout), or (None, "") when it could not run or did not end in time; outcome() gives
    (rc, stdout, stderr), stderr saying why when rc is None."""

    def __init__(self, proc, timeout, why=""):
        self.proc = proc
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.why = why
        self.answer = None

    def result(self):
        return self.outcome()[:2]

    def outcome(self):
        if self.answer is None:
            self.answer = self._read()
        return self.answer

    def _read(self):
        if self.proc is None:
            return None, "", self.why
        try:
            out, err = communicate_by(self.proc, self.deadline)
        except subprocess.TimeoutExpired:
            # Reaped, not read to the end: a child it started may hold the pipes open.
            self.proc.kill()
            self.proc.wait()
            self.proc.stdout.close()
            self.proc.stderr.close()
            return None, "", "no answer within %g s" % self.timeout
        return (
            self.proc.returncode,
            (out or b"").decode("utf-8", "replace"),
            (err or b"").decode("utf-8", "replace"),
        )


def start(args, timeout=STARTED_TIMEOUT):
    """Start a command given as an argument list now (C locale, no stdin), to read its result
    later: the probe's slow commands (a daemon's --version, systemctl, timedatectl) run side
    by side and while the probe reads files, instead of one after the other."""
    # Not AnsibleModule.run_command, which waits for the process.
    try:
        proc = subprocess.Popen(  # pylint: disable=ansible-bad-function
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(os.environ, LC_ALL="C"),
            cwd="/",
            close_fds=True,
        )
    except OSError as exc:
        return Started(None, timeout, errtext(exc))
    return Started(proc, timeout)


class Starter(object):
    """start(), remembering the processes it started: what must wait for them to end (the
    peers' SSH hops) finds them in ``procs``."""

    def __init__(self):
        self.procs = []

    def __call__(self, args, timeout=STARTED_TIMEOUT):
        call = start(args, timeout=timeout)
        if call.proc is not None:
            self.procs.append(call.proc)
        return call


class _Deferred(object):
    """start()'s stand-in that runs the command through the module when its result is read."""

    def __init__(self, module, args):
        self.module = module
        self.args = args
        self.answer = None

    def result(self):
        if self.answer is None:
            self.answer = run(self.module, self.args)
        return self.answer


def deferred(module):
    """A start function that runs each command with module.run_command when its result is
    read (one at a time, in the order read)."""
    return lambda args: _Deferred(module, args)


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
