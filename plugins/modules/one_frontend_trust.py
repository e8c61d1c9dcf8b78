#!/usr/bin/python
"""one_frontend_trust: kvmprep's block in a user's authorized_keys or known_hosts, written as root
without following a link the user planted."""

# Ansible module conventions: the documentation strings come before the imports; the code runs
# on the target's python3 (3.6 or later), standard library only.
DOCUMENTATION = r"""
---
module: one_frontend_trust
short_description: Write the managed block of a user's authorized_keys or known_hosts
description:
  - Puts I(lines) between the BEGIN and END lines of I(marker) in the user's C(~/.ssh/FILE), as
    M(ansible.builtin.blockinfile) does with C(create=true) (same markers, so a block it wrote is
    found and replaced; the lines outside the block are kept; no lines removes the block).
  - Runs as root in a directory the user controls, so nothing there is trusted. C(~/.ssh) and the
    file are opened without following a link; a link, a file with several hard links, or a
    file owned by another account than the user or root is refused, naming the path. The file
    is replaced by a rename with the user's owner and I(mode), never written through a link.
  - Every line is checked before anything is written, as it will be read by ssh, so that a
    name with a newline, a wildcard or a marker cannot add a line or a pattern of its own.
    I(file=authorized_keys) takes C(TYPE BASE64) lines, I(file=known_hosts)
    C(NAME[,NAME...] TYPE BASE64) lines whose names are host names or addresses.
author:
  - kvmprep maintainers (!UNKNOWN)
options:
  user:
    description: Whose C(~/.ssh) the file is in, and who owns it.
    type: str
    required: true
  file:
    description: The file of C(~/.ssh).
    type: str
    required: true
    choices: [authorized_keys, known_hosts]
  marker:
    description: The block's marker line, C({mark}) standing for BEGIN and END.
    type: str
    required: true
  lines:
    description: The lines of the block.
    type: list
    elements: str
    default: []
  mode:
    description: Mode of the file, an octal string.
    type: str
    default: "0600"
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: linux
"""

EXAMPLES = r"""
- name: Authorize the front-end's key
  kvmprep.kvm.one_frontend_trust:
    user: oneadmin
    file: authorized_keys
    marker: "# {mark} kvmprep: oneadmin keys of the OpenNebula front-end and hosts"
    lines:
      - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx2
"""

RETURN = r"""
path:
  description: The file written.
  type: str
  returned: always
diff:
  description: The file before and after.
  type: dict
  returned: when something changed (Ansible shows it in diff mode)
"""

import os
import pwd
import re
import stat

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_safepath import (
    UnsafePath,
    check_owner,
    join,
    link_refusal,
    lstat_at,
    make_dirs,
    open_file_at,
    read_fd,
    replace_file,
    set_attributes,
    walk,
)

_KEY_TYPE = re.compile(r"^(ssh-|ecdsa-|sk-)[A-Za-z0-9@._-]+$")
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,3}$")
# A host name, an IPv4 or IPv6 address, [name]:port; or a name hashed by ssh-keygen -H. No
# wildcard (*, ?), negation (!), marker (@) or blank: each would trust more than one machine.
_NAME = re.compile(r"^([A-Za-z0-9_][A-Za-z0-9._:-]*|\[[A-Za-z0-9._:-]+\]:[0-9]+)$")
_HASHED = re.compile(r"^\|1\|[A-Za-z0-9+/=]+\|[A-Za-z0-9+/=]+$")
_NAME_SOURCES = "one_frontend_host_name, ansible_host, the inventory name or a name it reports"


def _key_problem(key_type, key):
    if not _KEY_TYPE.match(key_type):
        return "{0!r} is not an SSH key type".format(key_type)
    if not _BASE64.match(key):
        return "the key is not base64"
    return None


def line_problem(kind, line):
    """Why line cannot go into a file of kind, None when it can."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in line):
        return "it holds a control character (a newline would add a line of its own)"
    fields = line.split(" ")
    if kind == "authorized_keys":
        if len(fields) != 2:
            return "it is not 'TYPE KEY'"
        return _key_problem(*fields)
    if len(fields) != 3:
        return "it is not 'NAMES TYPE KEY' (a name with a blank?)"
    for name in fields[0].split(","):
        if not (_NAME.match(name) or _HASHED.match(name)):
            return "{0!r} is not a host name or address ({1})".format(name, _NAME_SOURCES)
    return _key_problem(fields[1], fields[2])


def check_lines(kind, lines):
    """Fail with the first line that cannot go into the file, naming the machine it is about."""
    for line in lines:
        problem = line_problem(kind, line)
        if problem is not None:
            about = line.split(",")[0].split(" ")[0] if kind == "known_hosts" else "a machine"
            shown = repr(line if len(line) <= 80 else line[:77] + "...")
            raise UnsafePath(
                "{0}: refusing the line for {1} {2}: {3}".format(kind, about, shown, problem)
            )


def edit_block(text, marker, lines):
    """text with the block of marker holding lines (at the end when it has none; no lines: no
    block), as blockinfile edits it: the last BEGIN and the last END line delimit it."""
    begin, end = marker.replace("{mark}", "BEGIN"), marker.replace("{mark}", "END")
    current = text.splitlines()
    first = last = None
    for i, line in enumerate(current):
        if line == begin:
            first = i
        if line == end:
            last = i
    block = [begin, *lines, end] if lines else []
    if first is not None and last is not None:
        low, high = sorted((first, last))
        current[low : high + 1] = block
    else:
        current.extend(block)
    return "".join(line + "\n" for line in current)


def _ssh_dir(module, account):
    """The fd and real parts of ~/.ssh, made when missing (None in check mode)."""
    fd, parts, rest = walk(os.path.join(account.pw_dir, ".ssh"), missing_ok=True)
    if not rest:
        return fd, parts
    if module.check_mode:
        os.close(fd)
        return None, parts + rest
    return make_dirs(fd, parts, rest, account.pw_uid, account.pw_gid, 0o700)


def _current(dir_fd, name, shown, uid):
    """(text, fd, fstat) of the file, (\"\", None, None) when it does not exist."""
    if dir_fd is None:
        return "", None, None
    st = lstat_at(dir_fd, name)
    if st is None:
        return "", None, None
    if stat.S_ISLNK(st.st_mode):
        raise link_refusal(shown, st)
    check_owner(shown, st, uid)
    fd, st = open_file_at(dir_fd, name, shown)
    try:
        return read_fd(fd).decode("utf-8", "surrogateescape"), fd, st
    except BaseException:
        os.close(fd)
        raise


def write_block(module, account, mode):
    """changed, path and diff of putting the block into the file."""
    params = module.params
    dir_fd, parts = _ssh_dir(module, account)
    shown = join([*parts, params["file"]])
    fd = None
    try:
        text, fd, st = _current(dir_fd, params["file"], shown, account.pw_uid)
        wanted = edit_block(text, params["marker"], params["lines"])
        ids = (account.pw_uid, account.pw_gid, mode)
        if wanted == text and st is not None:
            actual = (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
            if actual != ids and not module.check_mode:
                set_attributes(fd, *ids)
            return actual != ids, shown, None
        if wanted == text:  # no file and no block: nothing to write
            return False, shown, None
        diff = {"before_header": shown, "after_header": shown, "before": text, "after": wanted}
        if not module.check_mode:
            replace_file(dir_fd, params["file"], wanted.encode("utf-8", "surrogateescape"), *ids)
        return True, shown, diff
    finally:
        for opened in (fd, dir_fd):
            if opened is not None:
                os.close(opened)


def run_module(module):
    params = module.params
    if "{mark}" not in params["marker"]:
        module.fail_json(msg="marker must contain {mark}")
    if not re.match(r"^0?[0-7]{3,4}$", params["mode"]):
        module.fail_json(msg="mode {0!r} is not an octal mode such as 0600".format(params["mode"]))
    try:
        account = pwd.getpwnam(params["user"])
    except KeyError:
        module.fail_json(msg="user {0} does not exist".format(params["user"]))
    try:
        check_lines(params["file"], params["lines"])
        changed, path, diff = write_block(module, account, int(params["mode"], 8))
    except UnsafePath as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg="{0}: {1}".format(exc.filename or params["file"], exc.strerror))
    result = {"changed": changed, "path": path}
    # Whatever the diff mode: Ansible shows a result's diff only in diff mode, and a module
    # has no public way to ask for it.
    if diff is not None:
        result["diff"] = diff
    module.exit_json(**result)


def main():
    module = AnsibleModule(
        argument_spec={
            "user": {"type": "str", "required": True},
            "file": {
                "type": "str",
                "required": True,
                "choices": ["authorized_keys", "known_hosts"],
            },
            "marker": {"type": "str", "required": True},
            "lines": {"type": "list", "elements": "str", "default": []},
            "mode": {"type": "str", "default": "0600"},
        },
        supports_check_mode=True,
    )
    run_module(module)


if __name__ == "__main__":
    main()
