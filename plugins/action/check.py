"""kvmprep.kvm.check, run on the controller only: judge the hosts audit.yml gathered.

``ansible-playbook kvmprep.kvm.check`` (playbooks/check.yml) runs audit.yml, the facts playbook
the kvmprep CLI runs, then this action once (run_once) for every host of the play. It reads the
results audit.yml registered on each host (check_inputs.REGISTERED), the unreachable and failed
ones included, and judges them with the CLI's code (plugins/plugin_utils: check_inputs,
controls, check_report), so it writes the bytes ``kvmprep check --format json`` prints for the
same hosts. No module is sent to any host.

Arguments: ``hosts`` (the hosts to judge, default: the play's ``ansible_play_hosts_all``),
``report`` (a path on the controller where the kvmprep.check/1 JSON is written; none: not
written), ``strict`` (bool: WARN counts as non-compliant, as ``kvmprep check --strict``).

Result: ``kvmprep_check`` (the report as data), ``exit_status`` (what ``kvmprep check`` would
exit with: 0, 2 or 3), ``failures`` (inventory host -> why it is not compliant, for each host
that is not: playbooks/check.yml fails those hosts with it), and ``ansible_stats`` (the report
as the custom stat ``kvmprep_check``, aggregated: AWX shows it among the job's artifacts).
``changed`` is false: the report is not a change to any host.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase

from ansible_collections.kvmprep.kvm.plugins.plugin_utils import check_inputs, check_report
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.evaluate import (
    evaluate_fleet,
)
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.task_result import failure_message

#: The custom stat (set_stats) the report is handed to AWX under.
STAT = "kvmprep_check"


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("hosts", "report", "strict"))
    _requires_connection = False
    # Judging and writing the report on the controller changes no host.
    _supports_check_mode = True

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self._task.args
        hosts = args.get("hosts", task_vars.get("ansible_play_hosts_all"))
        if not isinstance(hosts, Sequence) or isinstance(hosts, str):
            raise AnsibleActionFail("hosts: expected a list of inventory host names")
        strict = boolean(args.get("strict", False), strict=True)
        path = args.get("report")
        hostvars = task_vars["hostvars"]
        registered = {}
        for host in map(str, hosts):
            if host not in hostvars:
                raise AnsibleActionFail(f"hosts: {host!r} is not in the inventory")
            registered[host] = _registered(hostvars[host])
        doc, failures = judge(registered, strict=strict)
        if path:
            _write(Path(str(path)).expanduser(), check_report.dumps(doc))
        result.update(
            changed=False,
            kvmprep_check=doc,
            exit_status=doc["exit_status"],
            failures=failures,
            ansible_stats={"data": {STAT: doc}, "per_host": False, "aggregate": True},
        )
        return result


def _registered(variables: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Task name -> what audit.yml registered for it on one host (absent: the task never ran
    there). Through JSON, as the CLI receives the same results in ansible-runner's events: the
    judges see the same types (lists, string keys) either way."""
    found = {}
    for task, name in check_inputs.REGISTERED.items():
        if name in variables:
            value = json.loads(json.dumps(variables[name]))
            if isinstance(value, Mapping):
                found[task] = value
    return found


def judge(
    registered: Mapping[str, Mapping[str, Mapping[str, Any]]], *, strict: bool = False
) -> tuple[dict[str, Any], dict[str, str]]:
    """(the kvmprep.check/1 report, inventory host -> why it is not compliant) from each host's
    registered results (``_registered``), in play order: the results of the tasks that
    succeeded are the facts, a failed or unreachable one says why there are none, as the CLI's
    runner says it from the same task's event (its last failure, unreachable if any was)."""
    tasks: dict[str, dict[str, Mapping[str, Any]]] = {}
    unreachable: set[str] = set()
    messages: dict[str, str] = {}
    for host, results in registered.items():
        tasks[host] = {}
        for task, res in results.items():
            if res.get("unreachable"):
                unreachable.add(host)
                messages[host] = failure_message(res)
            elif res.get("failed"):
                messages[host] = failure_message(res)
            elif not res.get("skipped"):
                tasks[host][task] = res
    reports = evaluate_fleet(
        check_inputs.host_inputs(tasks, unreachable=unreachable, messages=messages)
    )
    status = check_inputs.exit_status(reports, strict=strict)
    doc = check_report.document(
        reports, version=check_report.collection_version(), strict=strict, exit_status=status
    )
    # A report's row -> its inventory host: the front-end's row of a machine that is also a
    # KVM host is "NAME (front-end)".
    rows = {check_inputs.frontend_row(host, found): host for host, found in tasks.items()}
    rows.update({host: host for host in tasks})
    failures: dict[str, str] = {}
    for row, why in check_report.host_failures(reports, strict=strict).items():
        host = rows.get(row, row)
        failures[host] = f"{failures[host]}; {why}" if host in failures else why
    return doc, failures


def _write(path: Path, text: str) -> None:
    """Write the report whole or not at all: a reader never sees half a report."""
    staged: Path | None = None
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        staged = Path(name)
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
        # The mode a plain open() gives (kvmprep check --output): mkstemp's is 0600.
        umask = os.umask(0)
        os.umask(umask)
        staged.chmod(0o666 & ~umask)
        staged.replace(path)
    except OSError as exc:
        if staged is not None:
            staged.unlink(missing_ok=True)
        raise AnsibleActionFail(f"report: cannot write {path}: {exc}") from exc
