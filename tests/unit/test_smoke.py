"""check --smoke/--migrate: results recorded from real runs on the lab, cleanup on cancel,
SMOKE controls only when asked for, --migrate needs two hosts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.catalog import (
    CATALOG,
    SMOKE,
    by_id,
    smoke_controls,
)
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.evaluate import (
    HostInput,
    evaluate_fleet,
)
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import Status
from kvmprep import check, cli, runner, smoke
from kvmprep.report import json as json_report

FIXTURES = Path(__file__).parent / "fixtures" / "smoke"


def _recorded(name: str) -> tuple[runner.RunResult, dict[str, Any]]:
    doc = json.loads((FIXTURES / f"{name}.json").read_text())
    result = runner.RunResult(
        hosts=tuple(runner.HostState(**h) for h in doc["host_states"]),
        artifact_dir=Path("/nonexistent"),
        runner_status="successful",
        rc=0,
        error=doc["error"],
        task_results=doc["task_results"],
    )
    return result, doc


def _judged(name: str, *, migrate: bool = True) -> dict[str, dict[str, Any]]:
    result, doc = _recorded(name)
    facts = smoke.smoke_facts(result, doc["hosts"], migrate=migrate, run_id=doc["run_id"])
    inputs = [HostInput(h, {"smoke": facts[h]}) for h in doc["hosts"]]
    reports = evaluate_fleet(inputs, controls=smoke_controls(migrate=migrate))
    return {r.name: {c.control.id: c for c in r.results} for r in reports}


def test_recorded_pass_with_timings() -> None:
    judged = _judged("migrate_pass")
    for host in ("dev12", "dev13"):
        boot = judged[host]["SMOKE-001"]
        assert boot.status is Status.PASS
        assert boot.message.startswith("disk 0.")
        assert "start 1." in boot.message
        migration = judged[host]["SMOKE-002"]
        assert migration.status is Status.PASS
        assert migration.message == "dev12 → dev13 2.00 s, back 1.37 s (qemu+tcp)"


def test_recorded_pass_facts() -> None:
    result, doc = _recorded("migrate_pass")
    facts = smoke.smoke_facts(result, doc["hosts"], migrate=True, run_id=doc["run_id"])
    migration = facts["dev12"]["migration"]
    assert migration["there"] == "qemu+tcp://dev13/system"
    assert migration["back"] == "qemu+tcp://dev12/system"
    assert migration["there_s"] == pytest.approx(2.0, abs=0.01)
    assert facts["dev13"]["cleanup"]["status"] == "pass"
    assert "qcow2" in facts["dev13"]["cleanup"]["removed"]
    # Without --migrate the same run gives no migration result.
    facts = smoke.smoke_facts(result, doc["hosts"], migrate=False, run_id=doc["run_id"])
    assert facts["dev12"]["migration"] is None


def test_recorded_listener_down_fails_naming_the_direction() -> None:
    judged = _judged("migrate_fail_listener")
    assert judged["dev12"]["SMOKE-001"].status is Status.PASS
    for host in ("dev12", "dev13"):
        migration = judged[host]["SMOKE-002"]
        assert migration.status is Status.FAIL
        assert migration.message.startswith("dev12 → dev13 (qemu+tcp://dev13/system): error:")
        assert "Connection refused" in migration.message
        assert "non-zero return code" not in migration.message


def test_boot_failure_and_missing_cleanup() -> None:
    boot_failed = {
        "ansible_facts": {
            "kvmprep_smoke_error": {
                "task": "kvmprep smoke start",
                "result": {"msg": "non-zero return code", "stderr": "error: a\nerror: b"},
            }
        }
    }
    result = runner.RunResult(
        hosts=(
            runner.HostState("a", ok=3),
            runner.HostState("b", failures=1, failed_task=smoke.CLEANUP, message="rm: denied"),
        ),
        artifact_dir=Path("/nonexistent"),
        runner_status="failed",
        rc=2,
        task_results={"a": {smoke.BOOT_FAILED: boot_failed, smoke.CLEANUP: {"stdout": "x"}}},
    )
    facts = smoke.smoke_facts(result, ["a", "b"], migrate=False, run_id="abc")
    reports = evaluate_fleet(
        [HostInput(h, {"smoke": facts[h]}) for h in "ab"], controls=smoke_controls(migrate=False)
    )
    a, b = (r.results[0] for r in reports)
    assert (a.status, a.message) == (Status.FAIL, "starting the domain: error: a error: b")
    assert b.status is Status.FAIL
    assert "cleanup failed, kvmprep-smoke-abc may be left: rm: denied" in b.message


def test_migrate_with_one_reached_host_is_an_error_on_it() -> None:
    result = runner.RunResult(hosts=(), artifact_dir=Path("/x"), runner_status="ok", rc=0)
    facts = smoke.smoke_facts(result, ["a"], migrate=True, run_id="abc")
    assert facts["a"]["migration"]["status"] == "error"
    assert "needs two hosts" in facts["a"]["migration"]["message"]


def test_seconds_from_delta() -> None:
    assert smoke.seconds({"delta": "0:00:01.500000"}) == 1.5
    assert smoke.seconds({"delta": "1:02:03.5"}) == 3723.5
    assert smoke.seconds({}) is None


# --- the catalog and the reports -----------------------------------------------------------


def test_smoke_controls_are_documented_and_not_in_every_check() -> None:
    assert not {c.id for c in CATALOG} & {c.id for c in SMOKE}
    assert [c.id for c in smoke_controls(migrate=False)] == ["SMOKE-001"]
    assert [c.id for c in smoke_controls(migrate=True)] == ["SMOKE-001", "SMOKE-002"]
    for control in SMOKE:
        assert all(control.as_dict().values()), control.id
        assert control.as_dict()["only_with"] in ("--smoke", "--migrate")
    assert "libvirt daemon running" in by_id("SMOKE-001").rationale
    assert "libvirt's migration capabilities" in by_id("SMOKE-002").rationale


def test_controls_command_lists_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["controls"]) == 0
    assert "SMOKE-002" in capsys.readouterr().out
    assert cli.main(["controls", "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)["controls"]
    assert {c["id"]: c.get("only_with") for c in listed}["SMOKE-001"] == "--smoke"


def _static_run(names: list[str]) -> runner.RunResult:
    probe = {"probe": {}, "expect": {}}
    return runner.RunResult(
        hosts=tuple(runner.HostState(n, ok=1) for n in names),
        artifact_dir=Path("/nonexistent"),
        runner_status="successful",
        rc=0,
        task_results={n: {check.PROBE_TASK: probe} for n in names},
    )


def _fake_runner(
    monkeypatch: pytest.MonkeyPatch, names: list[str], smoke_result: runner.RunResult | None
) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def run_playbook(playbook: Path, inventories: Any, **kwargs: Any) -> runner.RunResult:
        calls.append({"playbook": playbook.name, **kwargs})
        if playbook.name == "audit.yml":
            return _static_run(names)
        if playbook.name == "smoke.yml":
            assert smoke_result is not None
            return smoke_result
        return runner.RunResult(
            hosts=tuple(runner.HostState(n, ok=2) for n in names),
            artifact_dir=Path("/nonexistent"),
            runner_status="successful",
            rc=0,
            task_results={n: {smoke.CLEANUP: {"stdout": "domain"}} for n in names},
        )

    monkeypatch.setattr(runner, "run_playbook", run_playbook)
    return calls


def _smoke_keys(outcome: check.CheckRun) -> dict[str, list[str]]:
    """Per host, the SMOKE-* keys of the JSON report (the contract json_report documents)."""
    doc = json_report.document(outcome.reports)
    return {
        name: [c for c in host["controls"] if c.startswith("SMOKE-")]
        for name, host in doc["hosts"].items()
    }


def test_reports_have_smoke_controls_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    recorded, _ = _recorded("migrate_pass")
    calls = _fake_runner(monkeypatch, ["dev12", "dev13"], recorded)
    plain = check.run_check([Path("inv.yml")])
    assert [c["playbook"] for c in calls] == ["audit.yml"]
    assert not any(r.control.id.startswith("SMOKE") for r in plain.reports[0].results)
    assert _smoke_keys(plain) == {"dev12": [], "dev13": []}

    outcome = check.run_check([Path("inv.yml")], smoke_test=True)
    smoke_call = calls[-1]
    assert smoke_call["playbook"] == "smoke.yml"
    assert smoke_call["limit"] == "dev12,dev13"
    assert smoke_call["extravars"]["kvmprep_smoke_migrate"] is False
    ids = [r.control.id for r in outcome.reports[0].results]
    assert ids[-1] == "SMOKE-001"
    assert "SMOKE-002" not in ids
    assert _smoke_keys(outcome) == {"dev12": ["SMOKE-001"], "dev13": ["SMOKE-001"]}

    outcome = check.run_check([Path("inv.yml")], migrate=True)
    assert calls[-1]["extravars"]["kvmprep_smoke_migrate"] is True
    results = {r.control.id: r for r in outcome.reports[1].results}
    assert results["SMOKE-001"].status is Status.PASS
    assert results["SMOKE-002"].status is Status.PASS
    assert set(map(tuple, _smoke_keys(outcome).values())) == {("SMOKE-001", "SMOKE-002")}


def test_cancel_runs_the_cleanup_with_the_run_id(monkeypatch: pytest.MonkeyPatch) -> None:
    interrupted = runner.RunResult(
        hosts=(runner.HostState("dev12", ok=3, task_in_progress="kvmprep smoke start"),),
        artifact_dir=Path("/nonexistent"),
        runner_status="canceled",
        rc=-1,
        interrupted=True,
    )
    calls = _fake_runner(monkeypatch, ["dev12", "dev13"], interrupted)
    told: list[str] = []
    outcome = check.run_check(
        [Path("inv.yml")], migrate=True, cancel=lambda: False, notify=told.append
    )
    assert [c["playbook"] for c in calls] == ["audit.yml", "smoke.yml", "smoke-cleanup.yml"]
    run_id = calls[1]["extravars"]["kvmprep_smoke_run_id"]
    assert calls[2]["extravars"] == {"kvmprep_smoke_run_id": run_id}
    assert calls[2]["limit"] == "dev12,dev13"
    assert calls[2]["cancel"] is None  # a second Ctrl-C must not stop the cleanup
    assert outcome.interrupted
    assert outcome.smoke is not None
    assert outcome.smoke.not_cleaned == {}
    assert any(f"cleaning up kvmprep-smoke-{run_id}" in t for t in told)


def test_cli_cancel_exits_130(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    interrupted = runner.RunResult(
        hosts=(), artifact_dir=Path("/x"), runner_status="canceled", rc=-1, interrupted=True
    )
    _fake_runner(monkeypatch, ["dev12"], interrupted)
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("kvm_hosts: {hosts: {dev12: }}\n")
    assert cli.main(["check", "-i", str(inventory), "--smoke"]) == 130
    err = capsys.readouterr().err
    assert "interrupted during the smoke test; kvmprep-smoke-" in err
    assert "cleaned up on dev12" in err


def test_migrate_needs_two_hosts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = _fake_runner(monkeypatch, ["dev12"], None)
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("kvm_hosts: {hosts: {dev12: }}\n")
    assert cli.main(["check", "-i", str(inventory), "--migrate"]) == 1
    err = capsys.readouterr().err
    assert "--migrate needs two hosts" in err
    assert "found dev12" in err
    assert [c["playbook"] for c in calls] == ["audit.yml"]  # no smoke test was started
    # Without -i: this machine alone, refused before anything runs.
    assert cli.main(["check", "--migrate"]) == 1
    assert "this machine alone" in capsys.readouterr().err
    assert len(calls) == 1
