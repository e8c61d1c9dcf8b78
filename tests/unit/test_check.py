"""kvmprep check: the report renderers, the exit status, the runner's part, and a real run."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import FIXTURES
from test_controls import load

from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.catalog import (
    CATALOG,
    by_id,
    for_role,
)
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.evaluate import (
    HostInput,
    HostReport,
    evaluate_fleet,
    evaluate_host,
)
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import Expect, Role
from kvmprep import check, content, runner
from kvmprep.cli import main
from kvmprep.exitcodes import ExitStatus
from kvmprep.report import json as json_report
from kvmprep.report import table

IDS = [c.id for c in for_role(Role.KVM_HOST)]  # a KVM host's row
ALL_IDS = [c.id for c in CATALOG]


def _report(name: str, host: str | None = None) -> HostReport:
    return evaluate_host(host or name, load(name), Expect())


def _unreachable(host: str) -> HostReport:
    return evaluate_host(host, None, error="unreachable: ssh: connect timed out")


# --- exit status ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "strict", "status"),
    [
        (["debian12-converged"], False, ExitStatus.OK),
        (["debian12-converged"], True, ExitStatus.FAILED),  # KVM-001/KVM-005 WARN
        (["debian12-converged", "debian12-drift"], False, ExitStatus.FAILED),
        (["debian12-unprivileged"], False, ExitStatus.UNREACHABLE),  # ERROR, no FAIL
        (["debian12-unprivileged", "libvirt-0.8.7"], False, ExitStatus.FAILED),
        (["debian12-converged", None], False, ExitStatus.UNREACHABLE),
        (["debian12-drift", None], False, ExitStatus.FAILED),
    ],
)
def test_exit_status(names: list[str | None], strict: bool, status: ExitStatus) -> None:
    reports = [_report(n, f"h{i}") if n else _unreachable(f"h{i}") for i, n in enumerate(names)]
    assert check.exit_status(reports, strict=strict) is status


# --- table ---------------------------------------------------------------------------------


def resolving(facts: dict[str, Any], *names: str) -> dict[str, Any]:
    """The facts, with the probe resolving ``names`` to the fixture's one address (NET-001;
    both fixtures were recorded on one container, before the probe resolved names)."""
    found = facts["one"]["ssh"]["addresses"]
    entry = {"addresses": found, "loopback": False, "error": None}
    return {**facts, "names": {n: {"name": n, **entry} for n in names}}


def test_table_lines_and_summaries() -> None:
    out = io.StringIO()
    reports = evaluate_fleet(
        [
            HostInput("dev12", resolving(load("debian12-converged"), "dev12b"), Expect()),
            HostInput("dev12b", resolving(load("debian12-drift"), "dev12"), Expect()),
        ]
    )
    table.render_table(reports, out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "dev12"
    assert lines[1] == (
        "  KVM-001   CPU virtualization extensions .............. WARN (no vmx/svm in "
        "/proc/cpuinfo, but /dev/kvm creates VMs (nested or paravirtual KVM))"
    )
    control_lines = [line for line in lines if line.startswith("  ") and line[2] != " "]
    assert len(control_lines) == 2 * len(IDS)
    # Each FAIL is followed by the change that fixes it, straight from the catalog.
    fixes = [line.strip() for line in lines if line.startswith(" " * 12 + "fix: ")]
    assert len(fixes) == 4
    lv001 = next(i for i, line in enumerate(lines) if "LV-001" in line and "FAIL" in line)
    assert lines[lv001 + 1].strip() == "fix: " + by_id("LV-001").remediation
    assert lines[-4] == "dev12: compliant (30 PASS, 2 WARN, 6 SKIP)"
    assert lines[-3] == "dev12b: non-compliant (26 PASS, 2 WARN, 4 FAIL, 6 SKIP)"
    assert lines[-2] == "fleet: 2 hosts, 1 compliant, 1 non-compliant"
    # After the fleet, one verdict per OpenNebula cluster (both hosts are in "default");
    # debian12-drift was recorded before the probe's domains group: its running VMs are unknown.
    assert lines[-1] == (
        "cluster default (2 hosts): live migration possible in all 2 directions (running VMs "
        "not read on dev12b)"
    )
    assert "\x1b[" not in out.getvalue()


def test_no_cluster_line_for_a_run_of_one_host() -> None:
    out = io.StringIO()
    table.render_summary([_report("debian12-converged", "dev12")], out)
    assert out.getvalue().splitlines()[-1] == "fleet: 1 host, 1 compliant"


def test_table_quiet_colour_and_unreachable() -> None:
    out = io.StringIO()
    reports = [_report("debian12-drift", "a"), _unreachable("b")]
    table.render_table(reports, out, quiet=True, color=True)
    text = out.getvalue()
    assert "....... PASS" not in text
    assert "LV-001" in text
    assert "\x1b[1;31mFAIL\x1b[0m" in text
    assert "b\n  \x1b[31mERROR\x1b[0m unreachable: ssh: connect timed out\n" in text
    assert "1 not evaluated" in text


# --- json ----------------------------------------------------------------------------------


def test_json_document() -> None:
    reports = [_report("debian12-drift", "a"), _unreachable("b")]
    doc = json_report.document(reports, exit_status=2)
    assert doc["schema"] == "kvmprep.check/1"
    assert list(doc["hosts"]["a"]["controls"]) == IDS
    assert doc["hosts"]["a"]["controls"]["LV-001"]["status"] == "FAIL"
    assert doc["hosts"]["a"]["controls"]["LV-001"]["remediation"] == (by_id("LV-001").remediation)
    assert doc["hosts"]["a"]["verdict"] == "non-compliant"
    assert doc["hosts"]["b"]["error"].startswith("unreachable")
    assert doc["summary"] == {
        "hosts": 2,
        "compliant": [],
        "non_compliant": ["a"],
        "not_evaluated": ["b"],
        # NET-001 SKIPs: alone in its cluster, without a front-end, nothing resolves its name;
        # ONE-010 too: no kvmrc in the host's remotes and no front-end's to read.
        "counts": {"PASS": 25, "WARN": 2, "FAIL": 4, "SKIP": 7, "ERROR": len(IDS)},
    }
    # Added within kvmprep.check/1: the host's cluster, and the clusters' migration analysis.
    assert doc["hosts"]["a"]["cluster"] == "default"
    assert doc["hosts"]["b"]["cluster"] is None  # unreachable: its cluster is unknown
    assert list(doc["clusters"]) == ["default"]
    assert doc["clusters"]["default"]["hosts"] == ["a"]
    out = io.StringIO()
    json_report.render_json(reports, out, exit_status=2)
    assert json.loads(out.getvalue()) == json.loads(json.dumps(doc))


# --- runner: the facts of one task, the module path ------------------------------------------


def test_run_state_keeps_the_result_of_captured_tasks() -> None:
    state = runner.RunState(capture=frozenset({"probe"}))
    state({"event": "runner_on_ok", "event_data": {"host": "a", "task": "probe", "res": {"x": 1}}})
    state({"event": "runner_on_ok", "event_data": {"host": "a", "task": "other", "res": {}}})
    assert state.results == {"a": {"probe": {"x": 1}}}


def test_the_playbooks_name_the_collections_content_by_fqcn() -> None:
    # Nothing is found through ANSIBLE_LIBRARY/ACTION_PLUGINS/ROLES_PATH any more: every module
    # and role of audit.yml is kvmprep.kvm.*, which the collections path resolves.
    env = runner.ansible_environment({}, collections_path=[content.collections_dir()])
    for key in ("ANSIBLE_LIBRARY", "ANSIBLE_MODULE_UTILS", "ANSIBLE_ACTION_PLUGINS"):
        assert key not in env
    assert "ANSIBLE_ROLES_PATH" not in env
    plays = yaml.safe_load(content.playbook("audit").read_text())
    tasks = [task for play in plays for task in play["tasks"]]
    modules = {key for task in tasks for key in task if "." in key}
    modules |= {key for task in tasks for key in task.get("module_defaults", {})}
    roles = {task[key]["name"] for task in tasks for key in task if key.endswith(("_role",))}
    assert {"kvmprep.kvm.one_frontend_probe", "kvmprep.kvm.kvm_host_probe"} <= modules
    assert roles == {"kvmprep.kvm.one_frontend"}
    assert all(m.startswith(("ansible.builtin.", "kvmprep.kvm.")) for m in modules), modules
    # The probe's controller-side neighbours (plan, settings, warn) are the collection's
    # action plugins, with check's judge (playbooks/check.yml); the probe has none: it runs
    # as a plain module under AnsiballZ.
    assert sorted(p.name for p in content.plugin_path("action").glob("*.py")) == [
        "check.py",
        "kvm_host_plan.py",
        "kvm_host_settings.py",
        "kvm_host_warn.py",
    ]
    assert (content.plugin_path("modules") / "kvm_host_probe.py").is_file()


def test_reports_from_a_run_without_facts(tmp_path: Path) -> None:
    result = runner.RunResult(
        hosts=(runner.HostState("down", unreachable=1, message="timed out"),),
        artifact_dir=tmp_path,
        runner_status="failed",
        rc=4,
    )
    (report,) = check.reports_from_run(result)
    assert report.error == "unreachable: timed out"


# --- CLI -----------------------------------------------------------------------------------


def test_controls_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["controls", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    # The smoke controls (only with check --smoke/--migrate) are listed after the catalog.
    assert [c["id"] for c in doc["controls"]] == [*ALL_IDS, "SMOKE-001", "SMOKE-002"]
    assert main(["controls"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("KVM-001   high")


def test_check_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--format", "xml"]) == ExitStatus.USAGE
    assert main(["check", "-i", "/nonexistent"]) == ExitStatus.USAGE
    assert main(["check", "-o", "/nonexistent/dir/report.json"]) == ExitStatus.USAGE


@pytest.mark.ansible
def test_check_this_machine_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A real run on this machine (local connection): the JSON agrees with the exit status."""
    status = main(["check", "--format", "json"])
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    (host,) = doc["hosts"].values()
    assert list(host["controls"]) == IDS
    statuses = {c["status"] for c in host["controls"].values()}
    if "FAIL" in statuses:
        assert status == ExitStatus.FAILED
    elif "ERROR" in statuses:
        assert status == ExitStatus.UNREACHABLE
    else:
        assert status == ExitStatus.OK
    assert doc["exit_status"] == status
    assert "fleet: 1 host" in captured.err
    # --output: the file gets the report, the terminal only the summary.
    out = tmp_path / "report.txt"
    assert main(["check", "--output", str(out), "--quiet"]) == status
    err = capsys.readouterr().err
    assert "KVM-002" not in err
    assert f"report written to {out}" in err
    assert "fleet: 1 host" in out.read_text()


@pytest.mark.ansible
def test_check_unreachable_host(capsys: pytest.CaptureFixture[str]) -> None:
    inventory = FIXTURES / "inventory_unreachable.ini"
    status = main(["check", "-i", str(inventory), "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    closed = doc["hosts"]["closed"]
    assert closed["verdict"] == "not evaluated"
    assert closed["error"].startswith("unreachable: ")
    assert {c["status"] for c in closed["controls"].values()} == {"ERROR"}
    # The local host is still audited (the inventory makes it FAIL on any machine), and its
    # FAIL outweighs the unreachable host.
    local = doc["hosts"]["localhost"]
    assert local["verdict"] == "non-compliant"
    assert local["controls"]["USR-001"]["message"] == "user kvmprep-absent does not exist"
    assert status == ExitStatus.FAILED


def test_the_judges_are_imported_while_ansible_playbook_runs_not_before() -> None:
    """kvmprep check starts ansible-playbook without first importing the controls (about 0.2 s
    of a one-host check's wall time), then imports them in a thread during the run."""
    import subprocess
    import sys

    code = (
        "import sys, kvmprep.check as c\n"
        "before = sorted(n for n in c._AFTER_THE_RUN if n in sys.modules)\n"
        "c.import_judges()\n"
        "after = sorted(n for n in c._AFTER_THE_RUN if n in sys.modules)\n"
        "print(before, after == sorted(c._AFTER_THE_RUN))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[] True", proc.stdout + proc.stderr
