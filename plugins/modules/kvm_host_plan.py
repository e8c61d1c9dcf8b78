#!/usr/bin/python
# The documentation of the controller-side action plugin plugins/action/kvm_host_plan.py: the
# judge runs where check's controls run, on the controller, so this module never does the work
# on a host.
DOCUMENTATION = r"""
module: kvm_host_plan
short_description: Decide from the probe's facts what apply changes on a KVM host
description:
  - Runs on the controller only (an action plugin), with no round trip to the host. Asks
    module_utils/kvm_host_judge.py, the code kvmprep check's controls ask too, what is not as
    the settings want it on /dev/kvm, oneadmin, libvirt's units and configuration files, and
    returns the plan.
author:
  - kvmprep maintainers (!UNKNOWN)
options:
  facts:
    description: The probe's C(probe) result.
    type: dict
    required: true
  settings:
    description: The C(kvm_host_*) settings the judge compares with, role defaults applied.
    type: dict
    required: true
  libvirt_group:
    description: The group apply puts oneadmin in beside the kvm group.
    type: str
    default: ""
  pending:
    description: Check mode found packages to install; their units and groups are left out.
    type: bool
    default: false
  packages:
    description: The packages apply installs.
    type: list
    elements: str
    default: []
  sasl:
    description: The SASL account of the TCP listener is managed.
    type: bool
    default: false
  sasl_db:
    description: The SASL database the probe stat'ed.
    type: str
    default: /etc/libvirt/passwd.db
  emulator:
    description: The emulator the link for the drivers points to, as the probe stat'ed it.
    type: str
    default: ""
  remotes_dir:
    description: The directory the front-end copies its drivers to.
    type: str
    default: ""
  defaults_file:
    description:
      - The distribution's libvirt daemon defaults file, for a host where the probe found none.
    type: str
    default: ""
  defaults_key:
    description: The variable of O(defaults_file) that holds the daemon's arguments.
    type: str
    default: LIBVIRTD_ARGS
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
- name: Decide what to change from the probe
  kvmprep.kvm.kvm_host_plan:
    facts: "{{ __kvm_host_probe.probe }}"
    settings: "{{ __kvm_host_judge_settings }}"
    libvirt_group: libvirt
  register: __kvm_host_plan
"""

RETURN = r"""
plan:
  description:
    - What apply changes (kvm_device, accounts, units, config, ...) and the changes as sentences.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(
        argument_spec={
            "facts": {"type": "dict", "required": True},
            "settings": {"type": "dict", "required": True},
            "libvirt_group": {"type": "str", "default": ""},
            "pending": {"type": "bool", "default": False},
            "packages": {"type": "list", "elements": "str", "default": []},
            "sasl": {"type": "bool", "default": False},
            "sasl_db": {"type": "str", "default": "/etc/libvirt/passwd.db"},
            "emulator": {"type": "str", "default": ""},
            "remotes_dir": {"type": "str", "default": ""},
            "defaults_file": {"type": "str", "default": ""},
            "defaults_key": {"type": "str", "default": "LIBVIRTD_ARGS", "no_log": False},
        },
        supports_check_mode=True,
    )
    module.fail_json(msg="kvm_host_plan runs on the controller: its action plugin was not found")


if __name__ == "__main__":
    main()
