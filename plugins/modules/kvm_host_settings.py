#!/usr/bin/python
# The documentation of the controller-side action plugin plugins/action/kvm_host_settings.py:
# the judging needs the inventory's raw values and both roles' argument_specs, which only the
# controller has, so this module never does the work on a host.
DOCUMENTATION = r"""
module: kvm_host_settings
short_description: Refuse the roles' settings that would be unsafe or that the roles cannot apply
description:
  - Runs on the controller only (an action plugin). Judges every public variable of the named
    roles as the inventory gives it, with the argument_specs default when it is not set, by the
    rules of module_utils/kvm_host_settings.py (types, names, ids, paths, host names, the SASL
    mechanism, the listener), and fails with one line per problem.
author:
  - kvmprep maintainers (!UNKNOWN)
options:
  roles:
    description: The roles whose variables are judged, for the task's own host.
    type: list
    elements: str
    choices: [kvm_host, one_frontend]
    default: [kvm_host]
  hosts:
    description: Host name to its roles, to judge every host of a play in one call (run_once).
    type: dict
  apply:
    description:
      - Also judge what apply needs together (the SASL password for tcp, the certificates for
        tls).
    type: bool
    default: true
  fleet:
    description:
      - Also return RV(one_names) and RV(peers) of every kvm host of the inventory, for the
        probes of a check run (with run_once and register, every host of the run gets them).
    type: bool
    default: false
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
- name: Refuse settings kvmprep cannot apply safely
  kvmprep.kvm.kvm_host_settings:
    roles: [kvm_host]
"""

RETURN = r"""
kvmprep_invalid_settings:
  description: >-
    One line per problem, "VARIABLE: value REPR: problem" (a secret's value hidden).
  type: list
  elements: str
  returned: failure
one_names:
  description: >-
    The name OpenNebula knows each kvm host by (one_frontend_host_name, else the inventory
    name), in inventory order.
  type: list
  elements: str
  returned: success, with fleet
peers:
  description: >-
    The kvm hosts per cluster (one_frontend_cluster, else "default"): the cluster's inventory
    names, and its peers as {name, address} (address: the OpenNebula name).
  type: dict
  returned: success, with fleet
"""

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(
        argument_spec={
            "roles": {
                "type": "list",
                "elements": "str",
                "choices": ["kvm_host", "one_frontend"],
                "default": ["kvm_host"],
            },
            "hosts": {"type": "dict"},
            "apply": {"type": "bool", "default": True},
            "fleet": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    module.fail_json(
        msg="kvm_host_settings runs on the controller: its action plugin was not found"
    )


if __name__ == "__main__":
    main()
