"""``ansible-playbook kvmprep.kvm.check`` judges as ``kvmprep check`` does (issue 18, deliver 2):
the same facts give the same kvmprep.check/1 bytes through the CLI's path (ansible-runner's
events, kvmprep/check.py, kvmprep/report/json.py) and the action plugin's (the results
audit.yml registered, plugins/action/check.py), here with recorded facts and, at the end, on
this machine for real."""

from __future__ import annotations

import copy
import io
import json
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import REPO_ROOT
from test_opennebula import FRONTEND, api, node, registered

from ansible_collections.kvmprep.kvm.plugins.action import check as action
from ansible_collections.kvmprep.kvm.plugins.plugin_utils import check_inputs, check_report
from kvmprep import check, runner
from kvmprep.exitcodes import ExitStatus
from kvmprep.report import json as json_report
from tests.unit.ansible_env import ansible_env

PROBE, FRONTEND_TASK, API = check.PROBE_TASK, check.FRONTEND_TASK, check.API_TASK
UNREACHABLE = {"unreachable": True, "changed": False, "msg": "Failed to connect: timed out"}
PROBE_FAILED = {"failed": True, "changed": False, "msg": "kvm_host_probe: /proc not mounted"}

#: One run, in play order: (host, task, result). A result with "failed" or "unreachable" is
#: that event (and what Ansible registers); any other an ok one.
Run = list[tuple[str, str, Mapping[str, Any]]]


def _host(name: str, index: int) -> dict[str, Any]:
    expect = {"kvmprep_frontend": "fe", "one_frontend_cluster": "default"}
    return {"probe": node(name, index), "expect": expect}


def _fleet(*, frontend_is_a_host: bool = False, broken_api: bool = False) -> Run:
    fe_probe = {k: v for k, v in copy.deepcopy(FRONTEND).items() if k != "api"}
    hosts_api = api(registered("h1"), registered("h2"), error="timed out" if broken_api else "")
    run: Run = [
        ("down", PROBE, UNREACHABLE),
        ("h1", PROBE, _host("h1", 0)),
        ("h2", PROBE, _host("h2", 1)),
        ("sick", PROBE, PROBE_FAILED),
    ]
    if frontend_is_a_host:
        run.insert(0, ("fe", PROBE, _host("fe", 2)))
    return [
        *run,
        ("fe", FRONTEND_TASK, {"changed": False, "probe": fe_probe}),
        ("fe", API, {"changed": False, "msg": hosts_api}),
    ]


def _cli_bytes(run: Run, strict: bool) -> str:
    """What ``kvmprep check --format json`` prints after a run that sent these events."""
    state = runner.RunState(capture=frozenset({PROBE, FRONTEND_TASK, API}))
    for host, task, res in run:
        kind = (
            "runner_on_unreachable"
            if res.get("unreachable")
            else "runner_on_failed"
            if res.get("failed")
            else "runner_on_ok"
        )
        state({"event": kind, "event_data": {"host": host, "task": task, "res": dict(res)}})
    result = runner.RunResult(
        hosts=tuple(state.hosts.values()),
        artifact_dir=Path("/nonexistent"),
        runner_status="failed",
        rc=2,
        task_results=state.results,
    )
    reports = check.reports_from_run(result)
    out = io.StringIO()
    status = check.exit_status(reports, strict=strict)
    json_report.render_json(reports, out, strict=strict, exit_status=status)
    return out.getvalue()


def _registered(run: Run) -> dict[str, dict[str, Mapping[str, Any]]]:
    """What audit.yml registered on each host for the same run, task by task."""
    found: dict[str, dict[str, Mapping[str, Any]]] = {}
    for host, task, res in run:
        found.setdefault(host, {})[task] = dict(res)
    return found


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize(
    "options",
    [{}, {"frontend_is_a_host": True}, {"broken_api": True}],
    ids=["fleet", "front-end-is-a-kvm-host", "api-down"],
)
def test_the_action_writes_the_clis_bytes(options: dict[str, bool], strict: bool) -> None:
    run = _fleet(**options)
    doc, failures = action.judge(_registered(run), strict=strict)
    text = check_report.dumps(doc)
    assert text == _cli_bytes(run, strict)
    # The bytes are a report of these hosts, not two empty ones that agree.
    rows = {"down", "fe", "h1", "h2", "sick"}
    if options.get("frontend_is_a_host"):
        rows.add("fe (front-end)")
    assert set(doc["hosts"]) == rows
    assert doc["hosts"]["down"]["error"] == "unreachable: Failed to connect: timed out"
    assert doc["hosts"]["sick"]["error"] == "probe failed: kvm_host_probe: /proc not mounted"
    if options.get("frontend_is_a_host"):
        # The machine's two rows: its host row keeps its name (the fixture's fe is no
        # converged host: the fleet's controls fail, whatever they say the CLI says too).
        assert doc["hosts"]["fe"]["role"] == "kvm_host"
        assert doc["hosts"]["fe (front-end)"]["role"] != "kvm_host"
    else:
        # The converged hosts WARN (KVM-001, KVM-005): non-compliant only with strict; oned's
        # host pool unread, their ONE-002 is an ERROR (not evaluated, unless a WARN counts).
        unread = options.get("broken_api")
        plain = "not evaluated" if unread else "compliant"
        assert doc["hosts"]["h1"]["verdict"] == ("non-compliant" if strict else plain)
        if unread and not strict:
            assert failures["h1"].startswith("not evaluated: ONE-002 ERROR (")
        # A WARN that counts outweighs the hosts not evaluated, as in the CLI's exit status.
        assert doc["exit_status"] == (ExitStatus.FAILED if strict else ExitStatus.UNREACHABLE)
    # Every row that is not compliant fails its inventory host, with the reason.
    for row, host in doc["hosts"].items():
        name = row.removesuffix(" (front-end)")
        if host["verdict"] == "compliant":
            continue
        assert host["verdict"] in failures[name]
    assert failures["down"] == "not evaluated: unreachable: Failed to connect: timed out"
    assert set(failures) <= {"down", "sick", "fe", "h1", "h2"}


def test_the_exit_status_and_the_version_are_the_clis() -> None:
    import kvmprep

    # The collection cannot import kvmprep's ExitStatus; its copies must not drift from it.
    assert (check_inputs.OK, check_inputs.FAILED, check_inputs.UNREACHABLE) == (
        ExitStatus.OK,
        ExitStatus.FAILED,
        ExitStatus.UNREACHABLE,
    )
    # kvmprep_version: the package's in the CLI's report, the collection's in the action's.
    assert check_report.collection_version() == kvmprep.__version__


def _action(args: dict[str, Any]) -> action.ActionModule:
    task = SimpleNamespace(args=args, async_val=0, check_mode=False, action="kvmprep.kvm.check")
    connection = SimpleNamespace(_shell=SimpleNamespace(tmpdir="/nonexistent"))
    return action.ActionModule(task, connection, None, None, None)  # type: ignore[arg-type]


def test_the_action_writes_the_report_and_hands_it_to_set_stats(tmp_path: Path) -> None:
    run = _fleet(frontend_is_a_host=True, broken_api=True)
    hostvars = {
        host: {check_inputs.REGISTERED[task]: res for task, res in results.items()}
        for host, results in _registered(run).items()
    }
    report = tmp_path / "report.json"
    task_vars = {"hostvars": hostvars, "ansible_play_hosts_all": sorted(hostvars)}
    result = _action({"report": str(report), "strict": "yes"}).run(task_vars=task_vars)
    assert report.read_text() == _cli_bytes(run, strict=True)
    assert result["kvmprep_check"] == json.loads(report.read_text())
    assert result["ansible_stats"] == {
        "data": {"kvmprep_check": result["kvmprep_check"]},
        "per_host": False,
        "aggregate": True,
    }
    assert result["exit_status"] == ExitStatus.FAILED
    assert result["changed"] is False
    assert "failed" not in result
    # The machine that is a KVM host and the front-end fails once, with both rows' reasons.
    assert result["failures"]["fe"].count("non-compliant: ") == 2, result["failures"]["fe"]
    # Only the hosts asked for.
    result = _action({"hosts": ["h1", "h2"]}).run(task_vars=task_vars)
    assert set(result["kvmprep_check"]["hosts"]) == {"h1", "h2"}
    with pytest.raises(action.AnsibleActionFail, match="not in the inventory"):
        _action({"hosts": ["h9"]}).run(task_vars=task_vars)
    with pytest.raises(action.AnsibleActionFail, match="cannot write"):
        _action({"report": str(tmp_path / "no" / "r.json")}).run(task_vars=task_vars)
    assert not list(tmp_path.glob(".*"))


@pytest.mark.ansible
def test_the_playbook_and_the_cli_give_the_same_json_on_this_machine(tmp_path: Path) -> None:
    """Both for real, as `kvmprep check` without -i runs (this machine, local connection):
    ansible-playbook kvmprep.kvm.check with only the checkout's collection on its path, and
    python -m kvmprep check --format json."""
    playbook = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
    assert playbook is not None
    report = tmp_path / "playbook.json"
    # The json callback's recap then has the set_stats data (global: not per host).
    env = ansible_env(tmp_path, ANSIBLE_SHOW_CUSTOM_STATS="1")
    with check.local_inventory() as inventory:
        cmd = [playbook, "-i", str(inventory), "kvmprep.kvm.check"]
        ran = subprocess.run(
            [*cmd, "-e", f"kvmprep_check_report={report}"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    # The CLI in the same environment: its json stdout callback is ansible-playbook's choice,
    # which kvmprep replaces with the one ansible-runner reads its events from.
    cli = subprocess.run(
        [sys.executable, "-m", "kvmprep", "check", "--format", "json"],
        cwd=REPO_ROOT, env={**env, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert cli.stdout, cli.stderr
    assert report.read_text() == cli.stdout, ran.stdout[-3000:]
    doc = json.loads(cli.stdout)
    assert cli.returncode == doc["exit_status"]
    assert list(doc["hosts"]) == ["localhost"]
    # The json callback: the report is the job's custom stat, and the host fails exactly when
    # check says it is not compliant (ansible-playbook's 2: a failed host).
    stats = json.loads(ran.stdout[ran.stdout.index("{") :])
    assert stats["global_custom_stats"]["kvmprep_check"] == doc
    compliant = doc["hosts"]["localhost"]["verdict"] == "compliant"
    assert stats["stats"]["localhost"]["failures"] == (0 if compliant else 1)
    assert ran.returncode == (0 if compliant else 2), ran.stdout[-3000:]
