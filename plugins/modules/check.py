#!/usr/bin/python
# The documentation of the controller-side action plugin plugins/action/check.py: the judging
# reads every host's registered results (hostvars), which only the controller has, so this module
# never does the work on a host.
DOCUMENTATION = r"""
module: check
short_description: Judge the hosts playbooks/audit.yml gathered and write the kvmprep.check/1 report
description:
  - Runs on the controller only (an action plugin), once for every host of the play
    (C(run_once)). Reads the results playbooks/audit.yml registered on each host
    (C(kvmprep_check_host_facts), C(kvmprep_check_frontend_facts), C(kvmprep_check_one_hosts)),
    judges them with the controls of C(kvmprep check), and returns the C(kvmprep.check/1) report
    the CLI's C(kvmprep check --format json) prints for the same hosts (the same bytes when
    written to O(report)).
  - Also hands the report to C(set_stats) as the custom stat C(kvmprep_check) (aggregated), which
    AWX and ansible-runner show among the job's artifacts.
  - A host that audit.yml could not reach or probe is reported as not evaluated, with the reason
    of its failed task.
author:
  - kvmprep maintainers (!UNKNOWN)
options:
  hosts:
    description: The inventory hosts to judge; default the play's C(ansible_play_hosts_all).
    type: list
    elements: str
  report:
    description:
      - Path on the controller where the report's JSON is written (replaced whole); relative to
        the working directory of ansible-playbook. Not written when unset.
    type: path
  strict:
    description: WARN counts as non-compliant too (C(kvmprep check --strict)).
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
- name: Judge every host as kvmprep check does
  kvmprep.kvm.check:
    hosts: "{{ ansible_play_hosts_all }}"
    report: /var/tmp/kvmprep-check.json
  run_once: true
  register: judged

- name: Fail the hosts that are not compliant
  ansible.builtin.fail:
    msg: "{{ judged.failures[inventory_hostname] }}"
  when: inventory_hostname in judged.failures
"""

RETURN = r"""
kvmprep_check:
  description: The report (schema C(kvmprep.check/1)), as data.
  type: dict
  returned: success
exit_status:
  description: >-
    What C(kvmprep check) exits with for these hosts: 0 every host compliant, 2 a control
    non-compliant (FAIL, or WARN with O(strict)), 3 a host or a control not evaluated.
  type: int
  returned: success
failures:
  description: Inventory host to why it is not compliant, for each host that is not.
  type: dict
  returned: success
"""

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(
        argument_spec={
            "hosts": {"type": "list", "elements": "str"},
            "report": {"type": "path"},
            "strict": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    module.fail_json(msg="check runs on the controller: its action plugin was not found")


if __name__ == "__main__":
    main()
