#!/usr/bin/python
"""kvm_host_snapshot: keep libvirt's configuration as it was, to roll back a failed restart."""

# Ansible module conventions: the documentation strings come before the imports; the code runs
# on the target's python3 (3.6 or later), standard library only.
DOCUMENTATION = r"""
---
module: kvm_host_snapshot
short_description: Save a set of configuration paths, or put them back exactly as saved
description:
  - C(state=saved) copies every existing path matching I(paths) (shell globs; files, symlinks and
    directory trees, with modes, owners and times) under I(dest), and records which paths
    matched. An earlier snapshot in I(dest) is replaced. It reports C(changed=false), as the
    snapshot is the run's own bookkeeping under /run (tmpfs), not a change to the host.
  - C(state=restored) makes the paths exactly what was saved; saved paths are copied back,
    replacing what is there now, and paths matching I(paths) now that did not exist when the
    snapshot was taken (a unit drop-in created by the run) are removed.
  - With I(service), C(state=saved) first compares the earlier snapshot with the files now; a
    path that changed since then, while I(service) has been running from before the change,
    is configuration the daemon has never read (an earlier run was interrupted between its
    change and its restart). It is returned in I(restart_pending), and the earlier snapshot is
    kept, as it is what the running daemon uses, so it stays the one to roll back to.
  - Reads, but does not save or restore, in check mode.
author:
  - kvmprep maintainers (!UNKNOWN)
options:
  paths:
    description: Paths or shell globs to save; only needed with C(state=saved).
    type: list
    elements: str
    default: []
  dest:
    description: Directory that holds the snapshot, an absolute path.
    type: str
    required: true
  service:
    description:
      - The systemd unit of the daemon that reads these paths (C(state=saved)); empty skips the
        comparison.
    type: str
    default: ""
  state:
    description: Save, or restore.
    type: str
    choices: [saved, restored]
    default: saved
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
- name: Keep libvirt's configuration to roll back to
  kvmprep.kvm.kvm_host_snapshot:
    paths: [/etc/libvirt, /etc/default/libvirtd, "/etc/systemd/system/libvirtd*"]
    dest: /run/kvmprep/libvirt-snapshot

- name: Put it back
  kvmprep.kvm.kvm_host_snapshot:
    dest: /run/kvmprep/libvirt-snapshot
    state: restored
"""

RETURN = r"""
saved:
  description: The paths that existed and were saved (state=saved), or were put back.
  type: list
  returned: always
removed:
  description: Paths created after the snapshot and removed by the restore.
  type: list
  returned: always
restart_pending:
  description:
    - Files changed since the earlier snapshot that the running I(service) started before
      (C(state=saved) with I(service)); empty when there is nothing the daemon has not read.
  type: list
  returned: always
kvmprep_changes:
  description:
    - For kvmprep's change report; the snapshot is the run's own bookkeeping under /run, no
      change to the host (empty); a restore names what it put back.
  type: list
  elements: dict
  returned: always
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_snapshot import (
    restore,
    take,
)

# dest is a str, not a path: the module does not expand ~ or $VAR in it.
ARGUMENT_SPEC = {
    "paths": {"type": "list", "elements": "str", "default": []},
    "dest": {"type": "str", "required": True},
    "state": {"type": "str", "choices": ["saved", "restored"], "default": "saved"},
    "service": {"type": "str", "default": ""},
}


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    dest = module.params["dest"]
    saving = module.params["state"] == "saved"
    if saving:
        try:
            pending, saved = take(
                module.params["paths"],
                dest,
                module.params["service"],
                module.check_mode,
                module.warn,
            )
        except (OSError, ValueError, KeyError) as exc:
            module.fail_json(msg="snapshot {0}: {1}".format(dest, exc))
        module.exit_json(
            changed=False, saved=saved, removed=[], restart_pending=pending, kvmprep_changes=[]
        )
    if module.check_mode:
        module.exit_json(
            changed=False, saved=[], removed=[], restart_pending=[], kvmprep_changes=[]
        )
    try:
        saved, removed = restore(dest)
    except (OSError, ValueError, KeyError) as exc:
        module.fail_json(msg="snapshot {0}: {1}".format(dest, exc))
    module.exit_json(
        changed=True,
        saved=saved,
        removed=removed,
        restart_pending=[],
        kvmprep_changes=[
            {
                "concern": "restart",
                "text": "libvirt did not come back: its configuration from before this run "
                "put back (%s)" % ", ".join(saved + removed),
            }
        ],
    )


if __name__ == "__main__":
    main()
