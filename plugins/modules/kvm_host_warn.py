#!/usr/bin/python
# Emits Ansible warnings, so that a decision the operator must know about (emulation instead of
# KVM, an unauthenticated listener) shows up as a [WARNING] and in kvmprep's summary, not only in
# verbose output as a debug message would.
DOCUMENTATION = r"""
module: kvm_host_warn
short_description: Report warnings without changing anything
description: Returns each message as an Ansible warning. Never changes the host.
author:
  - kvmprep maintainers (!UNKNOWN)
options:
  msg:
    description: The warnings to emit.
    type: list
    elements: str
    required: true
  changes:
    description:
      - Lines for kvmprep's change report, returned as C(kvmprep_changes) (a check-mode warning
        that names what a real run would change, for instance), as a mapping of concern to lines.
    type: dict
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
attributes:
  action:
    support: full
  async:
    support: none
  bypass_host_loop:
    support: none
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: all
"""

EXAMPLES = r"""
- name: Warn about an unauthenticated listener
  kvmprep.kvm.kvm_host_warn:
    msg:
      - libvirt's TCP listener accepts connections without authentication
"""

RETURN = r"""
warned:
  description: The messages that were emitted.
  type: list
  returned: always
kvmprep_changes:
  description: I(changes), for kvmprep's change report.
  type: dict
  returned: when I(changes) is given
"""

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(
        argument_spec={
            "msg": {"type": "list", "elements": "str", "required": True},
            "changes": {"type": "dict"},
        },
        supports_check_mode=True,
    )
    for message in module.params["msg"]:
        module.warn(message)
    result = {"changed": False, "warned": module.params["msg"]}
    if module.params["changes"] is not None:
        result["kvmprep_changes"] = module.params["changes"]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
