"""The tasks of playbooks/audit.yml whose results ``check`` judges, by name and by the variable
each result is registered in.

A module of its own, without the controls: the kvmprep CLI needs the names to start the run
and imports the controls (about 0.2 s) only while ansible-playbook runs (kvmprep/check.py).
"""

from __future__ import annotations

#: A KVM host's facts, the front-end's, and what oned's host pool said (read from the
#: controller for the front-end). The CLI finds their results by these names in ansible-runner's
#: events; audit.yml registers them under REGISTERED too.
PROBE_TASK = "kvmprep check facts"
FRONTEND_TASK = "kvmprep check front-end facts"
API_TASK = "kvmprep check OpenNebula hosts"
#: Task name -> the variable audit.yml registers its result in (the action plugin reads those).
REGISTERED = {
    PROBE_TASK: "kvmprep_check_host_facts",
    FRONTEND_TASK: "kvmprep_check_frontend_facts",
    API_TASK: "kvmprep_check_one_hosts",
}
