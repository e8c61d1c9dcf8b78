# -*- coding: utf-8 -*-
"""kvm_host_probe's one group: what the OpenNebula front-end needs on the host (remotes, trust,
runtime).
"""

import os
import pwd
import subprocess
import time

from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_names import resolve_names
from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_oneadmin import (
    remotes_digest,
    ssh_state,
)
from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_probe_common import (
    errtext,
    find_program,
    search_dirs,
    stat_path,
)

ONE_REMOTES_DIR = "/var/tmp/one"  # kvm_host_probe's remotes_dir default
ONE_SUDOERS = "/etc/sudoers.d/kvmprep-oneadmin"
# The one OpenNebula's node package installs (kvm_host_one_node_install: package).
ONE_SUDOERS_PACKAGE = "/etc/sudoers.d/opennebula-node-kvm"
# What the remotes require before anything else (roles/kvm_host/tasks/node_runtime.yml).
ONE_RUBY_PROBE = "require 'sqlite3'; require 'load_opennebula_paths'"
ONE_RUNTIME_TOOLS = ("lspci", "rsync", "xmllint")
ONE_RUBY_TIMEOUT = 10.0


def _start_as(user, args):
    """Start args as user (root switches with runuser; user itself runs it directly); a Popen,
    or the reason it cannot run."""
    try:
        me = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        me = None
    if me != user:
        if os.geteuid() != 0:
            return "needs root (or %s) to run as %s" % (user, user)
        args = ["runuser", "-u", user, "--", *args]
    # Not AnsibleModule.run_command, which waits for the process: it runs while the probe gathers.
    try:
        return subprocess.Popen(  # pylint: disable=ansible-bad-function
            args,
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(os.environ, LC_ALL="C"),
            close_fds=True,
        )
    except OSError as exc:
        return errtext(exc)


def start_ruby_probe(user):
    """Start Ruby as user requiring what the remotes require first: (Popen or why, deadline).
    It runs while the rest of the probe gathers (Ruby with RubyGems takes 0.3 s or more)."""
    ruby = find_program("ruby", search_dirs(os.environ.get("PATH")))
    proc = _start_as(user, [ruby, "-e", ONE_RUBY_PROBE]) if ruby else None
    return ruby, proc, time.monotonic() + ONE_RUBY_TIMEOUT


def _ruby_error(proc, deadline):
    """None when Ruby loaded everything, else the line that says why."""
    if not isinstance(proc, subprocess.Popen):
        return proc or "ruby is not installed"
    try:
        _out, err = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return "no answer within %g s" % ONE_RUBY_TIMEOUT
    if proc.returncode == 0:
        return None
    lines = [line.strip() for line in err.decode("utf-8", "replace").splitlines() if line.strip()]
    why = next((line for line in lines if "Error" in line), lines[0] if lines else "")
    # "<internal:...>:85:in `require': cannot load such file -- sqlite3 (LoadError)"
    return why.split("': ", 1)[-1] or "exit status %d" % proc.returncode


def gather_one(user, remotes_dir=ONE_REMOTES_DIR, frontend="", run_command=None, ruby=None):
    """The host side of the ONE-00x and USR-003 controls; ``ruby`` is start_ruby_probe's
    (started here when not given)."""
    ruby_path, proc, deadline = ruby or start_ruby_probe(user)
    dirs = search_dirs(os.environ.get("PATH"))
    try:
        home = pwd.getpwnam(user).pw_dir
    except KeyError:
        home = None
    res = {
        "remotes": remotes_digest(remotes_dir, user),
        "datastores": stat_path(os.path.join(home, "datastores")) if home else None,
        "ssh": ssh_state(user, run_command or (lambda args: (1, "", ""))),
        "frontend": resolve_names([frontend])[frontend] if frontend else None,
        "runtime": {
            "ruby": {"path": ruby_path, "loads": False, "error": None},
            "tools": {name: find_program(name, dirs) for name in ONE_RUNTIME_TOOLS},
            "sudoers": stat_path(ONE_SUDOERS),
            "sudoers_package": stat_path(ONE_SUDOERS_PACKAGE),
        },
    }
    why = _ruby_error(proc, deadline)
    res["runtime"]["ruby"].update(loads=why is None, error=why)
    return res
