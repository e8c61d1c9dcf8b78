"""What ``check`` judges, from what playbooks/audit.yml gathered, and the exit status it means.

Shared by the two ways to run check: the kvmprep CLI reads the results of audit.yml's tasks from
ansible-runner's events, the action plugin kvmprep.kvm.check (playbooks/check.yml) reads the
same results registered as host variables. Both give ``host_inputs`` the same
``{host: {task name: result}}`` and each host's failure message, so both judge the same hosts
with the same code (and write the same ``kvmprep.check/1`` bytes). Controller-side code of the
collection: nothing here imports the kvmprep package (the CLI depends on the collection, never
the reverse) or Ansible.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from typing import Any

from ansible_collections.kvmprep.kvm.plugins.plugin_utils import check_tasks
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls import opennebula
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.evaluate import (
    HostInput,
    HostReport,
)
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import (
    Expect,
    Role,
    Status,
    VmmDefaults,
)

#: The tasks of playbooks/audit.yml and their registered variables (check_tasks: the names).
PROBE_TASK = check_tasks.PROBE_TASK
FRONTEND_TASK = check_tasks.FRONTEND_TASK
API_TASK = check_tasks.API_TASK
REGISTERED = check_tasks.REGISTERED

#: kvmprep's exit-code contract (kvmprep/exitcodes.py, ExitStatus: a test compares them), the
#: values check gives: every host compliant; a control non-compliant; a host not evaluated.
OK = 0
FAILED = 2
UNREACHABLE = 3


def host_inputs(
    tasks: Mapping[str, Mapping[str, Any]],
    *,
    unreachable: Collection[str] = (),
    messages: Mapping[str, str] | None = None,
) -> list[HostInput]:
    """The facts (or why there are none) of every machine of the run, sorted by name: the KVM
    hosts, and the front-end (whose facts feed the hosts' VM defaults).

    ``tasks``: every host of the run -> the results of the tasks above that succeeded on it;
    ``unreachable``: the hosts Ansible could not reach; ``messages``: host -> the message of
    its last failed or unreachable task.
    """
    messages = messages or {}
    frontend = _frontend_name(tasks)
    inputs = []
    for host in sorted(tasks):
        found = tasks[host]
        prefix = "unreachable" if host in unreachable else "probe failed"
        why = messages.get(host)
        if host == frontend:
            inputs.append(_frontend_input(host, found, prefix, why))
            if PROBE_TASK not in found:
                continue
        res: Mapping[str, Any] | None = found.get(PROBE_TASK)
        if res is None or not isinstance(res.get("probe"), Mapping):
            error = f"{prefix}: {why or 'the facts probe did not run'}"
            inputs.append(HostInput(host, None, error=error))
            continue
        expect = Expect.from_vars(res.get("expect") or {})
        inputs.append(HostInput(host, res["probe"], expect))
    fe = next((i for i in inputs if i.role is Role.FRONTEND and i.facts is not None), None)
    if fe is None:
        return inputs
    vmm_kvm = fe.facts.get("vmm_kvm") or {}  # type: ignore[union-attr]
    vmm = VmmDefaults(
        machine=vmm_kvm.get("machine"),
        cpu_model=vmm_kvm.get("cpu_model"),
        source=f"vmm_exec_kvm.conf on {fe.name}",
        not_loaded=opennebula.not_loaded(fe.facts, "vmm_exec_kvm.conf"),  # type: ignore[arg-type]
    )
    return [
        replace(i, vmm=vmm) if i.role is Role.KVM_HOST and i.facts is not None else i
        for i in inputs
    ]


def _frontend_name(tasks: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The front-end: named in the hosts' expected values, else the machine probed as one."""
    for found in tasks.values():
        res = found.get(PROBE_TASK)
        name = ((res or {}).get("expect") or {}).get("kvmprep_frontend")
        if name:
            return str(name)
    return next((name for name, found in tasks.items() if FRONTEND_TASK in found), None)


def frontend_row(host: str, tasks: Mapping[str, Any]) -> str:
    """The report's name of the front-end ``host``: a machine that is also a KVM host keeps its
    name for the host row."""
    return f"{host} (front-end)" if PROBE_TASK in tasks else host


def _frontend_input(host: str, found: Mapping[str, Any], prefix: str, why: str | None) -> HostInput:
    res = found.get(FRONTEND_TASK)
    name = frontend_row(host, found)
    if res is None or not isinstance(res.get("probe"), Mapping):
        error = f"{prefix}: {why or 'the front-end probe did not run'}"
        return HostInput(name, None, error=error, role=Role.FRONTEND)
    api = (found.get(API_TASK) or {}).get("msg")
    facts = {**res["probe"], "api": api if isinstance(api, Mapping) else None}
    return HostInput(name, facts, role=Role.FRONTEND)


def exit_status(reports: Sequence[HostReport], *, strict: bool = False) -> int:
    """2 on any FAIL (WARN too with strict), else 3 on any ERROR or unevaluated host, else 0."""
    failing = {Status.FAIL, Status.WARN} if strict else {Status.FAIL}
    statuses = {r.status for report in reports for r in report.results}
    if statuses & failing:
        return FAILED
    if Status.ERROR in statuses or any(report.error for report in reports):
        return UNREACHABLE
    return OK
