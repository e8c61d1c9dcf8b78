#!/usr/bin/python
"""one_frontend_read: read a small file of oneadmin's as root, without following a planted link."""

# Ansible module conventions: the documentation strings come before the imports; the code runs
# on the target's python3, standard library only.
DOCUMENTATION = r"""
---
module: one_frontend_read
short_description: Read a small file in oneadmin's home or remotes as root, link-safely
description:
  - What M(ansible.builtin.slurp) does for oneadmin's C(~/.one/one_auth) and the remotes'
    C(VERSION), without following a link that a less privileged account could have put on the
    path (kvm_host_safepath), as oneadmin could otherwise point one_auth at /etc/shadow and have its
    first line sent to oned as credentials.
  - The file must be a regular file with one name, owned by one of I(owners), at most I(limit)
    bytes. A missing file is not an error (C(exists) false); a refused one fails with the reason,
    never the content.
version_added: "0.1.0"
author:
  - kvmprep maintainers (!UNKNOWN)
options:
  path:
    description: Absolute path of the file.
    type: path
    required: true
  owners:
    description: Names of the accounts that may own the file (root is always allowed).
    type: list
    elements: str
    default: []
  limit:
    description: Largest size accepted, in bytes.
    type: int
    default: 65536
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
- name: Read oneadmin's one_auth
  kvmprep.kvm.one_frontend_read:
    path: /var/lib/one/.one/one_auth
    owners: [oneadmin]
  register: auth
  no_log: true
"""

RETURN = r"""
exists:
  description: Whether the file exists.
  type: bool
  returned: always
content:
  description: The file's text (UTF-8; undecodable bytes replaced).
  type: str
  returned: when the file exists
"""

import contextlib
import pwd

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_safepath import (
    UnsafePath,
    read_file,
)


def allowed_uids(names):
    uids = {0}
    for name in names:
        with contextlib.suppress(KeyError):
            uids.add(pwd.getpwnam(name).pw_uid)
    return uids


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "owners": {"type": "list", "elements": "str", "default": []},
            "limit": {"type": "int", "default": 65536},
        },
        supports_check_mode=True,
    )
    path = module.params["path"]
    try:
        found = read_file(
            path, limit=module.params["limit"], owners=allowed_uids(module.params["owners"])
        )
    except UnsafePath as exc:
        module.fail_json(msg="{0}: {1}".format(path, exc))
    except OSError as exc:
        module.fail_json(msg="cannot read {0}: {1}".format(path, exc.strerror or exc))
    if found is None:
        module.exit_json(changed=False, exists=False)
    module.exit_json(changed=False, exists=True, content=found[0].decode("utf-8", "replace"))


if __name__ == "__main__":
    main()
