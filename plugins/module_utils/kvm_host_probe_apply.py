# -*- coding: utf-8 -*-
"""kvm_host_probe's apply-only groups (installed, paths, ruby_dir, sasl, blocks): what apply must
know before it changes anything, so that a converged host costs no module call per item.
Never gathered by check.
"""

import hmac
import os
import re
import subprocess

from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_probe_common import (
    BIN_DIRS,
    errtext,
    find_program,
    read_text,
    run,
    search_dirs,
    stat_path,
)

DPKG_STATUS = "/var/lib/dpkg/status"
# Names the package database answers for as they are; anything else (a version, a glob, a
# group) is left to the package manager, which then runs.
_DPKG_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]*(:[a-z0-9-]+)?$")
_RPM_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_+.-]*$")
RUBY_DIR_SCRIPT = (
    "d = [RbConfig::CONFIG['vendordir'], RbConfig::CONFIG['sitedir']].compact"
    ".find { |p| $LOAD_PATH.include?(p) }; "
    "abort('neither the vendor nor the site directory is on the load path') unless d; print d"
)
RUBY_DIR_TIMEOUT = 10.0


def dpkg_installed(text):
    """Names (and name:arch) of the packages the dpkg status file lists as installed."""
    installed = set()
    for stanza in text.split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            key, sep, value = line.partition(":")
            if sep and not line[:1].isspace():
                fields[key] = value.strip()
        status = fields.get("Status", "").split()
        if fields.get("Package") and status and status[-1] == "installed":
            installed.add(fields["Package"])
            if fields.get("Architecture"):
                installed.add("%s:%s" % (fields["Package"], fields["Architecture"]))
    return installed


def gather_installed(module, names, status_path=DPKG_STATUS, dirs=None):
    """Which of names are not installed. Unknown (no dpkg nor rpm, unreadable) is all of them:
    the package manager then decides, as it would without this answer."""
    names = list(names)
    if os.path.exists(status_path):
        text = read_text(status_path)
        if text is None:
            return {"manager": "dpkg", "missing": names}
        have = dpkg_installed(text)
        return {
            "manager": "dpkg",
            "missing": [n for n in names if not _DPKG_NAME.match(n) or n not in have],
        }
    rpm = find_program("rpm", BIN_DIRS if dirs is None else dirs)
    if rpm is None:
        return {"manager": None, "missing": names}
    plain = [n for n in names if _RPM_NAME.match(n)]
    have = set()
    if plain:
        # One line per installed name; "package X is not installed" for the others (rc 1).
        _rc, out = run(module, [rpm, "-q", "--qf", "%{NAME}\n", *plain])
        have = {line.strip() for line in out.splitlines()}
    return {"manager": "rpm", "missing": [n for n in names if n not in have]}


def gather_paths(paths):
    return {path: {k: v for k, v in stat_path(path).items() if k != "path"} for path in paths}


def start_ruby_dir(dirs=None):
    """Start Ruby asking for the directory (Popen, or why it cannot run): Ruby takes 0.1-0.5 s
    to start, and runs while the rest of the probe gathers."""
    ruby = find_program("ruby", search_dirs(os.environ.get("PATH")) if dirs is None else dirs)
    if ruby is None:
        return "ruby is not installed"
    # Not AnsibleModule.run_command, which waits for the process: Ruby runs meanwhile.
    try:
        return subprocess.Popen(  # pylint: disable=ansible-bad-function
            [ruby, "-e", RUBY_DIR_SCRIPT],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            close_fds=True,
        )
    except OSError as exc:
        return errtext(exc)


def finish_ruby_dir(proc, timeout=RUBY_DIR_TIMEOUT):
    """{"dir", "error"} from start_ruby_dir's process."""
    if not isinstance(proc, subprocess.Popen):
        return {"dir": None, "error": proc}
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"dir": None, "error": "ruby gave no answer within %g s" % timeout}
    out = out.decode("utf-8", "replace").strip()
    if proc.returncode != 0 or not out:
        lines = err.decode("utf-8", "replace").strip().splitlines()
        return {"dir": None, "error": lines[-1] if lines else "ruby exited %d" % proc.returncode}
    return {"dir": out, "error": None}


def sasl_user_listed(text, user):
    """Whether sasldblistusers2's output ("user@realm: userPassword") has an entry of user."""
    return any(line.startswith(user + "@") for line in text.splitlines())


def gather_sasl(module, db, user, fingerprint, dirs=None):
    res = {"user_present": False, "fingerprint_matches": False}
    lister = find_program("sasldblistusers2", BIN_DIRS if dirs is None else dirs)
    if lister is not None and user and os.path.exists(db):
        _rc, out = run(module, [lister, "-f", db])
        res["user_present"] = sasl_user_listed(out, user)
    recorded = read_text(db + ".kvmprep")
    if recorded is not None and fingerprint:
        res["fingerprint_matches"] = hmac.compare_digest(
            recorded.strip().encode(), fingerprint.encode()
        )
    return res


def block_present(text, marker, block):
    """Whether blockinfile would leave text as it is: the last BEGIN and END marker lines
    (blockinfile replaces between those) enclose exactly the lines of block."""
    if text is None:
        return False
    lines = text.splitlines()
    begin, end = marker.replace("{mark}", "BEGIN"), marker.replace("{mark}", "END")
    n0 = n1 = None
    for i, line in enumerate(lines):
        if line == begin:
            n0 = i
        if line == end:
            n1 = i
    if n0 is None or n1 is None or n0 >= n1:
        return False
    return lines[n0 + 1 : n1] == block.splitlines()


def gather_blocks(blocks):
    res = {}
    for spec in blocks:
        entry = {k: v for k, v in stat_path(spec["path"]).items() if k != "path"}
        entry["present"] = entry["exists"] and block_present(
            read_text(spec["path"]), spec["marker"], spec["block"]
        )
        res[spec["path"]] = entry
    return res
