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
attributes:
  check_mode:
    support: full
"""

EXAMPLES = r"""
- name: Give oneadmin a key pair and learn how others reach this machine
  one_frontend_ssh:
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
import stat

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kvm_host_oneadmin import (  # shared with the check's probes
    existing_identity,
    host_keys,
    interface_addresses,
    machine_names,
    read_key_line,
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
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return []
    with os.fdopen(fd) as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return []
        lines = handle.read().splitlines()
    begin, end = marker.replace("{mark}", "BEGIN"), marker.replace("{mark}", "END")
    if begin not in lines or end not in lines[lines.index(begin) :]:
        return []
    start = lines.index(begin) + 1
    return lines[start : lines.index(end, start)]


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
            if not os.path.isdir(ssh_dir):
                os.mkdir(ssh_dir, 0o700)
                os.chown(ssh_dir, account.pw_uid, account.pw_gid)
            generate(module, user, key_file, key_type)
    public_key = ""
    if os.path.exists(key_file + ".pub"):
        public_key = read_key_line(key_file + ".pub")

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
    run_module(module)


if __name__ == "__main__":
    main()
