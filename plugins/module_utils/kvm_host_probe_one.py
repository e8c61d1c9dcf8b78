# -*- coding: utf-8 -*-
"""kvm_host_probe's one group: what the OpenNebula front-end needs on the host (remotes, trust,
runtime).
"""

import glob
import os
import pwd
import re
import subprocess
import time

from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_names import resolve_names
from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_oneadmin import (
    remotes_digest,
    ssh_state,
)
from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_probe_common import (
    BIN_DIRS,
    communicate_by,
    errtext,
    find_program,
    read_text_why,
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
ONE_RUBY_LATE = "no answer within %g s" % ONE_RUBY_TIMEOUT
# Ruby without RubyGems starts in a fifth of the time (0.05 s against 0.25 s as oneadmin on
# Debian 12, the probe's longest wait): what loads without it is the same file RubyGems' own
# require finds first on $LOAD_PATH, so only a failure is asked again the drivers' way.
ONE_RUBY_FAST = ("--disable-gems",)
# The sudoers files whose rules the drivers rely on (ONE-009): OpenNebula's packages' and
# kvmprep's own.
ONE_SUDOERS_GLOB = "/etc/sudoers.d/opennebula*"
ONE_SUDO_TIMEOUT = 5.0
# The KVM driver's settings in the remotes the front-end copied (ONE-010); moved from vmm/kvm
# (up to 4.x) to etc/vmm/kvm.
KVMRC_CANDIDATES = ("etc/vmm/kvm/kvmrc", "vmm/kvm/kvmrc")
KVMRC_KEYS = ("QEMU_PROTOCOL", "LIBVIRT_URI", "MIGRATE_OPTIONS")


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
    proc = _start_as(user, [ruby, *ONE_RUBY_FAST, "-e", ONE_RUBY_PROBE]) if ruby else None
    return ruby, proc, time.monotonic() + ONE_RUBY_TIMEOUT


def finish_ruby_probe(user, started):
    """None when Ruby loads what the remotes require, else why (start_ruby_probe's run; when
    that fails without RubyGems, once more with them, with a deadline of its own: the probe
    may collect the first run late, and a run that did not answer is not asked again)."""
    ruby, proc, deadline = started
    why = _ruby_error(proc, deadline)
    if why is not None and why != ONE_RUBY_LATE and ruby and isinstance(proc, subprocess.Popen):
        again = _start_as(user, [ruby, "-e", ONE_RUBY_PROBE])
        why = _ruby_error(again, time.monotonic() + ONE_RUBY_TIMEOUT)
    return why


def _ruby_error(proc, deadline):
    """None when Ruby loaded everything, else the line that says why."""
    if not isinstance(proc, subprocess.Popen):
        return proc or "ruby is not installed"
    try:
        _out, err = communicate_by(proc, deadline)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return ONE_RUBY_LATE
    if proc.returncode == 0:
        return None
    lines = [line.strip() for line in err.decode("utf-8", "replace").splitlines() if line.strip()]
    why = next((line for line in lines if "Error" in line), lines[0] if lines else "")
    # "<internal:...>:85:in `require': cannot load such file -- sqlite3 (LoadError)"
    return why.split("': ", 1)[-1] or "exit status %d" % proc.returncode


def start_sudo_list(user):
    """`sudo -n -l` as user, started now: (Popen or why, deadline). -n: a rule that needs a
    password fails instead of asking, as the drivers' sudo does."""
    sudo = find_program("sudo", search_dirs(os.environ.get("PATH")))
    proc = _start_as(user, [sudo, "-n", "-l"]) if sudo else "sudo is not installed"
    return proc, time.monotonic() + ONE_SUDO_TIMEOUT


def finish_sudo_list(started):
    """{ok, error}: ok None when it could not be asked (not root, no sudo)."""
    proc, deadline = started
    if not isinstance(proc, subprocess.Popen):
        return {"ok": None, "error": proc}
    try:
        out, err = communicate_by(proc, deadline)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"ok": False, "error": "no answer within %g s" % ONE_SUDO_TIMEOUT}
    if proc.returncode == 0:
        return {"ok": True, "error": None}
    lines = [x.strip() for x in (err + out).decode("utf-8", "replace").splitlines() if x.strip()]
    return {"ok": False, "error": lines[0] if lines else "exit status %d" % proc.returncode}


def _logical_lines(text):
    """sudoers lines with their backslash continuations joined, comments dropped."""
    joined, pending = [], ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.endswith("\\") and not line.endswith("\\\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        if line.strip() and not line.lstrip().startswith("#"):
            joined.append(line.strip())
    if pending.strip():
        joined.append(pending.strip())
    return joined


def _split_commas(text):
    """Split at commas that sudoers does not escape (\\, is part of an argument)."""
    parts, current, escaped = [], "", False
    for char in text:
        if escaped:
            current += char
            escaped = False
        elif char == "\\":
            current += char
            escaped = True
        elif char == ",":
            parts.append(current.strip())
            current = ""
        else:
            current += char
    parts.append(current.strip())
    return [p for p in parts if p]


# What may precede a command in a sudoers rule: a digest, a run-as list, tags, options.
_DIGEST = re.compile(r"^sha(224|256|384|512):\S+\s+")
_RUNAS = re.compile(r"^\([^)]*\)\s*")
_TAG = re.compile(r"^(NO)?(PASSWD|SETENV|EXEC|LOG_INPUT|LOG_OUTPUT|MAIL|FOLLOW|INTERCEPT)\s*:\s*")
_OPTION = re.compile(r"^(CWD|CHROOT|ROLE|TYPE|TIMEOUT|NOTBEFORE|NOTAFTER|APPARMOR_PROFILE)=\S+\s+")
_KEYWORDS = ("Defaults", "User_Alias", "Runas_Alias", "Host_Alias", "Cmnd_Alias", "Cmd_Alias")


def _command_path(entry):
    """The path a Cmnd entry names (after run-as, tags, options, digest, negation), or None:
    ALL, sudoedit and alias names name no file."""
    entry = entry.strip()
    while True:
        rest = entry.lstrip("!").strip()
        for pattern in (_RUNAS, _TAG, _OPTION, _DIGEST):
            rest = pattern.sub("", rest, count=1)
        if rest == entry:
            break
        entry = rest
    words = entry.split()
    command = words[0] if words else ""
    if command.startswith("/") and not command.endswith("/"):
        return command
    return None


def parse_cmnd_aliases(text):
    """[(alias, command path)] that the rules name: the Cmnd_Alias lines (several aliases per
    line joined by ':' too), and the commands user specifications name directly (as
    "user <name>"); negated entries too."""
    found = []
    for line in _logical_lines(text or ""):
        words = line.split(None, 1)
        if len(words) < 2 or words[0].startswith(("#", "@", "Defaults")):
            continue
        if words[0] in _KEYWORDS[:4]:
            continue
        alias = words[0] in _KEYWORDS
        # A run-as list may hold " : " ((ALL : ALL)): only alias lines are split there.
        for definition in words[1].split(" : ") if alias else [line]:
            name, sep, commands = definition.partition("=")
            if not sep:
                continue
            label = name.strip() if alias else "user " + words[0]
            for entry in _split_commas(commands):
                command = _command_path(entry)
                if command is not None:
                    found.append((label, command))
    return found


def gather_sudo_rules(paths=None, dirs=tuple(BIN_DIRS)):
    """Per command path the sudoers rules name: the alias and file, whether it exists, and
    where a program of that name is instead (sudo matches the path the rule names)."""
    if paths is None:
        paths = [*sorted(glob.glob(ONE_SUDOERS_GLOB)), ONE_SUDOERS]
    files, commands, seen = [], [], set()
    for path in paths:
        text, why = read_text_why(path)
        if text is None:
            if why != os.strerror(2):  # absent is ONE-004's business
                files.append({"path": path, "error": why})
            continue
        files.append({"path": path, "error": None})
        for alias, command in parse_cmnd_aliases(text):
            if (path, command) in seen:  # `ip link *`, `ip route *`: one file, one path
                continue
            seen.add((path, command))
            exists = os.path.exists(command)
            elsewhere = None
            if not exists:
                elsewhere = find_program(os.path.basename(command), dirs)
            commands.append(
                {
                    "file": path,
                    "alias": alias,
                    "command": command,
                    "exists": exists,
                    "elsewhere": elsewhere,
                }
            )
    return {"files": files, "commands": commands}


def parse_kvmrc(text):
    """The KVMRC_KEYS of a kvmrc (shell: VAR=value or export VAR=value, quotes removed; the
    last assignment wins, as when the driver sources it)."""
    values = {}
    for line in (text or "").splitlines():
        line = line.strip()
        if line.startswith("export "):
            line = line[len("export ") :].strip()
        name, sep, value = line.partition("=")
        if not sep or name not in KVMRC_KEYS:
            continue
        value = value.split(" #", 1)[0].strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values


def gather_kvmrc(remotes_dir):
    """The host's copy of the front-end's kvmrc: what the migrate action run here reads."""
    paths = [os.path.join(remotes_dir, c) for c in KVMRC_CANDIDATES]
    path = next((p for p in paths if os.path.exists(p)), paths[0])
    text, why = read_text_why(path)
    values = parse_kvmrc(text)
    return {
        "path": path,
        "exists": text is not None,
        "error": None if text is not None or why == os.strerror(2) else why,
        "qemu_protocol": values.get("QEMU_PROTOCOL"),
        "libvirt_uri": values.get("LIBVIRT_URI"),
        "migrate_options": values.get("MIGRATE_OPTIONS"),
    }


def gather_one(
    user, remotes_dir=ONE_REMOTES_DIR, frontend="", run_command=None, ruby=None, sudo=None
):
    """The host side of the ONE-00x and USR-003 controls; ``ruby`` is start_ruby_probe's and
    ``sudo`` start_sudo_list's (started here when not given)."""
    ruby = ruby or start_ruby_probe(user)
    ruby_path = ruby[0]
    sudo = sudo or start_sudo_list(user)
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
            "sudo": gather_sudo_rules(),
        },
        "kvmrc": gather_kvmrc(remotes_dir),
    }
    res["runtime"]["sudo"]["list"] = finish_sudo_list(sudo)
    why = finish_ruby_probe(user, ruby)
    res["runtime"]["ruby"].update(loads=why is None, error=why)
    return res
