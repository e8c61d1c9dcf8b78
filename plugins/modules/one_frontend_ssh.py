#!/usr/bin/python
"""one_frontend_ssh: what oneadmin's SSH trust needs to know about a machine, in one round trip."""

# Ansible module conventions: the documentation strings come before the imports; the code runs
# on the target's python3 (3.6 or later), standard library only.
DOCUMENTATION = r"""
---
module: one_frontend_ssh
short_description: Give a user an SSH key pair and report the machine's SSH identity
description:
  - Reports the public key the user authenticates with (the first of OpenSSH's default identity
    files that exists), generating a key pair of I(key_type) when the user has none.
  - Reports the machine's SSH host public keys and the names and addresses other machines may
    use to reach it (short host name, fully qualified name, every non-loopback address), so that
    every machine can authorize and know every other one without an interactive prompt.
  - Changes nothing but the key pair it generates; in check mode it generates nothing.
  - Runs as root in the user's home, which the user controls. The files are opened without
    following a link; the public key must be a small regular file of the user (or root) that
    looks like a public key. Anything else fails the module, naming the path.
author:
  - kvmprep maintainers (!UNKNOWN)
options:
  user:
    description: The user whose key pair is reported (and generated when missing).
    type: str
    required: true
  key_type:
    description: Type of the key pair generated when the user has none.
    type: str
    choices: [ed25519, ecdsa, rsa]
    default: ed25519
  blocks:
    description:
      - Files of the user's C(.ssh) directory (by name) and the marker of the block kvmprep
        manages in each, as blockinfile's C(marker) with C({mark}). The lines now inside each
        block are reported, so that a run that lacks some machine can keep their lines.
    type: dict
    default: {}
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
- name: Give oneadmin a key pair and learn how others reach this machine
  kvmprep.kvm.one_frontend_ssh:
    user: oneadmin
  register: identity
"""

RETURN = r"""
public_key:
  description: The user's public key line; empty in check mode when it would be generated.
  type: str
  returned: always
key_file:
  description: The private key file of that key.
  type: str
  returned: always
host_keys:
  description: The machine's SSH host public keys, as "type base64" pairs.
  type: list
  returned: always
names:
  description: Short and fully qualified host names of the machine.
  type: list
  returned: always
addresses:
  description: The machine's non-loopback IPv4 and IPv6 addresses.
  type: list
  returned: always
blocks:
  description:
    - Per file of I(blocks), the lines inside its managed block (empty when the file or the
      block does not exist). A file that is not a regular file (a link, for instance) is not
      read and reports no lines.
  type: dict
  returned: always
"""

import os
import pwd
import socket

from ansible.module_utils.basic import AnsibleModule

# Shared with the check's probes.
from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_oneadmin import (
    existing_identity,
    host_keys,
    interface_addresses,
    machine_names,
    read_key_line,
)
from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_safepath import (
    UnsafePath,
    make_dirs,
    read_file,
    walk,
)


def generate(module, user, key_file, key_type):
    """ssh-keygen as the user, so the files are born with the user's owner and umask."""
    argv = [
        "ssh-keygen",
        "-q",
        "-t",
        key_type,
        "-N",
        "",
        "-C",
        user + "@" + socket.gethostname(),
        "-f",
        key_file,
    ]
    if key_type == "rsa":
        argv[4:4] = ["-b", "4096"]
    if os.geteuid() == 0 and pwd.getpwuid(os.geteuid()).pw_name != user:
        argv = ["runuser", "-u", user, "--", *argv]
    rc, _out, err = module.run_command(argv)
    if rc != 0:
        module.fail_json(msg="ssh-keygen for {0} failed: {1}".format(user, err.strip()))


def block_lines(path, marker):
    """The lines between blockinfile's BEGIN and END markers in path, without following a link
    (root reads oneadmin's files here: a link oneadmin planted must not make root read another)."""
    try:
        found = read_file(path)
    except (OSError, UnsafePath):
        return []
    if found is None:
        return []
    lines = found[0].decode("utf-8", "replace").splitlines()
    begin, end = marker.replace("{mark}", "BEGIN"), marker.replace("{mark}", "END")
    if begin not in lines or end not in lines[lines.index(begin) :]:
        return []
    start = lines.index(begin) + 1
    return lines[start : lines.index(end, start)]


def make_ssh_dir(ssh_dir, account):
    """~/.ssh when it is missing, the user's and 0700, made without following a link in the
    user's home (a link there could make root create or chown a directory elsewhere)."""
    fd, parts, rest = walk(ssh_dir, missing_ok=True)
    if rest:
        fd, parts = make_dirs(fd, parts, rest, account.pw_uid, account.pw_gid, 0o700)
    os.close(fd)


def run_module(module):
    user = module.params["user"]
    key_type = module.params["key_type"]
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        module.fail_json(msg="user {0} does not exist".format(user))
    ssh_dir = os.path.join(account.pw_dir, ".ssh")
    changed = False
    key_file = existing_identity(ssh_dir)
    if key_file is None:
        key_file = os.path.join(ssh_dir, "id_" + key_type)
        changed = True
        if not module.check_mode:
            make_ssh_dir(ssh_dir, account)
            generate(module, user, key_file, key_type)
    public_key = ""
    if os.path.lexists(key_file + ".pub"):
        public_key = read_key_line(key_file + ".pub", owners=(0, account.pw_uid))

    module.exit_json(
        changed=changed,
        public_key=public_key,
        key_file=key_file,
        host_keys=host_keys(),
        names=machine_names(),
        addresses=interface_addresses(module.run_command),
        blocks={
            name: block_lines(os.path.join(ssh_dir, os.path.basename(name)), marker)
            for name, marker in module.params["blocks"].items()
        },
    )


def main():
    module = AnsibleModule(
        argument_spec={
            "user": {"type": "str", "required": True},
            "key_type": {
                "type": "str",
                "default": "ed25519",
                "choices": ["ed25519", "ecdsa", "rsa"],
            },
            "blocks": {"type": "dict", "default": {}},
        },
        supports_check_mode=True,
    )
    try:
        run_module(module)
    except UnsafePath as exc:  # a link or a file that is no key: one line naming the path
        module.fail_json(msg=str(exc))


if __name__ == "__main__":
    main()
