"""run_playbook against real ansible-playbook runs on this machine (local connection)."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kvmprep.exitcodes import ExitStatus
from kvmprep.runner import (
    KEEP_ARTIFACTS,
    HostStatus,
    RunResult,
    RunState,
    TaskOutcome,
    ansible_environment,
    artifact_root_dir,
    cancel_on_signals,
    failure_message,
    prune_artifacts,
)

# Matches the sha1 asserted in fixtures/extravars.yml.
CANARY = "kvmprep-canary-5e3cr3t-71d2"

Run = Callable[..., RunResult]
ansible = pytest.mark.ansible


@pytest.fixture(scope="module")
def ok_run(run_fixture: Run) -> RunResult:
    return run_fixture("ok.yml")


@pytest.fixture(scope="module")
def fail_one_run(run_fixture: Run) -> RunResult:
    return run_fixture("fail_one.yml")


@pytest.fixture(scope="module")
def extravars_run(run_fixture: Run) -> RunResult:
    # In the real process environment: ansible-runner seeds the child's from os.environ.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("KVMPREP_TEST_UNRELATED_SECRET", CANARY)
        env.setenv("ANSIBLE_TIMEOUT", "17")
        return run_fixture(
            "extravars.yml", extravars={"flag": True, "count": 3, "secret_token": CANARY}
        )


@ansible
def test_all_ok_counts_changes(ok_run: RunResult) -> None:
    assert ok_run.exit_status is ExitStatus.OK
    assert [h.name for h in ok_run.hosts] == ["localhost", "second"]
    for host in ok_run.hosts:
        assert (host.ok, host.changed, host.failures, host.unreachable) == (3, 1, 0, 0)
        assert host.status is HostStatus.CHANGED
    assert ok_run.artifact_dir.is_dir()
    assert "-ok-" in ok_run.artifact_dir.name  # <UTC time>-<playbook>-<random>: sortable


@ansible
def test_meanwhile_and_the_pruning_run_while_the_playbook_runs(
    run_fixture: Run, tmp_path: Path
) -> None:
    # Work done before ansible-playbook starts delays it (one host's check is measured against
    # a bare ansible-playbook): it runs in a thread once ansible-runner starts the playbook.
    artifacts = tmp_path / "artifacts"
    old = time.time() - 7200
    for n in range(KEEP_ARTIFACTS + 3):
        run = artifacts / f"old-{n:02d}"
        run.mkdir(parents=True)
        os.utime(run, (old + n, old + n))
    calls: list[str] = []
    result = run_fixture(
        "ok.yml",
        environ={"KVMPREP_ARTIFACT_DIR": str(artifacts)},
        meanwhile=lambda: calls.append(threading.current_thread().name),
    )
    assert result.exit_status is ExitStatus.OK
    assert calls == ["kvmprep-while-running"]
    kept = sorted(p.name for p in artifacts.iterdir())
    assert len(kept) == KEEP_ARTIFACTS, kept
    assert result.artifact_dir.name in kept
    assert "old-00" not in kept
    assert f"old-{KEEP_ARTIFACTS + 2}" in kept


@ansible
def test_failing_host_is_named_and_the_other_completes(fail_one_run: RunResult) -> None:
    assert fail_one_run.exit_status is ExitStatus.FAILED
    second = fail_one_run.host("second")
    assert second.status is HostStatus.FAILED
    assert second.failed_task == "Break the second host"
    assert second.message == "boom on purpose"
    other = fail_one_run.host("localhost")
    assert other.status is HostStatus.CHANGED
    assert (other.failures, other.changed, other.skipped) == (0, 1, 1)


@ansible
def test_ignored_and_rescued_failures_are_not_host_failures(run_fixture: Run) -> None:
    result = run_fixture("recoverable.yml")
    assert result.exit_status is ExitStatus.OK
    for host in result.hosts:
        assert (host.failures, host.ignored, host.rescued) == (0, 1, 1)
        assert host.status is HostStatus.OK


@ansible
def test_unreachable_host_exits_3(run_fixture: Run) -> None:
    result = run_fixture("ok.yml", "inventory_unreachable.ini")
    assert result.exit_status is ExitStatus.UNREACHABLE
    closed = result.host("closed")
    assert closed.status is HostStatus.UNREACHABLE
    assert closed.failed_task == "Reach the host"
    assert "port 1" in (closed.message or "")
    assert result.host("localhost").status is HostStatus.CHANGED


@ansible
def test_check_flag_runs_in_check_mode(run_fixture: Run) -> None:
    assert run_fixture("check_mode.yml", check=True).exit_status is ExitStatus.OK
    without = run_fixture("check_mode.yml")
    assert without.exit_status is ExitStatus.FAILED
    assert without.host("localhost").message == "not in check mode"


@ansible
def test_extravars_reach_the_play(extravars_run: RunResult) -> None:
    assert extravars_run.exit_status is ExitStatus.OK, extravars_run


@ansible
def test_secrets_stay_out_of_the_artifacts(extravars_run: RunResult) -> None:
    files = [p for p in extravars_run.artifact_dir.parent.rglob("*") if p.is_file()]
    assert any(p.name == "command" for p in files)
    leaks = [p for p in files if CANARY.encode() in p.read_bytes()]
    assert leaks == []
    assert not (extravars_run.artifact_dir / "fact_cache").exists()
    command = json.loads((extravars_run.artifact_dir / "command").read_text())
    # Extra vars reach ansible-playbook as a file path, and that file is gone after the run.
    extravars_file = command["command"][command["command"].index("-e") + 1]
    assert extravars_file.startswith("@")
    assert not Path(extravars_file[1:]).exists()
    # Only allow-listed variables reach the child; the operator's ANSIBLE_* values win.
    assert "KVMPREP_TEST_UNRELATED_SECRET" not in command["env"]
    assert command["env"]["ANSIBLE_TIMEOUT"] == "17"
    assert command["env"]["ANSIBLE_PIPELINING"] == "True"


@ansible
def test_syntax_error_is_an_input_error(run_fixture: Run) -> None:
    result = run_fixture("syntax_error.yml")
    assert result.exit_status is ExitStatus.USAGE
    assert result.input_error
    assert "syntax_error.yml" in (result.error or "")
    assert "YAML" in (result.error or "")


@ansible
def test_no_host_matched_is_an_input_error(run_fixture: Run) -> None:
    result = run_fixture("ok.yml", limit="no-such-host")
    assert result.exit_status is ExitStatus.USAGE
    # ansible-playbook refuses a --limit that matches nothing ("ERROR! " before 2.19, "[ERROR]: "
    # since); where it would only warn, kvmprep names the case itself.
    assert re.match(
        r"(\[ERROR\]: |ERROR! )Specified inventory, host pattern and/or --limit leaves us with no "
        r"hosts to target\.$|no host matched the play \(check the inventory and --limit\)",
        result.error or "",
    ), result.error


@ansible
def test_cancel_stops_the_run_and_names_touched_hosts(run_fixture: Run) -> None:
    live: dict[str, RunState] = {}

    def observe(state: RunState) -> None:
        live["state"] = state

    def waiting() -> bool:
        hosts = live["state"].hosts.values() if live else ()
        return any(h.task_in_progress == "Wait a long time" for h in hosts)

    result = run_fixture("slow.yml", observer=observe, cancel=waiting)
    assert result.exit_status is ExitStatus.INTERRUPTED
    assert result.interrupted
    assert sorted(result.partially_changed) == ["localhost", "second"]


def test_sigint_sets_the_cancel_flag() -> None:
    previous = signal.getsignal(signal.SIGINT)
    with cancel_on_signals() as cancelled:
        assert not cancelled.is_set()
        os.kill(os.getpid(), signal.SIGINT)
        assert cancelled.wait(timeout=5)
    assert signal.getsignal(signal.SIGINT) is previous


def test_event_handler_follows_ansible_navigator_rules() -> None:
    state = RunState()
    events = [
        {"event": "playbook_on_task_start", "event_data": {"task": "Install"}},
        {"event": "runner_on_start", "event_data": {"host": "a", "task": "Install"}},
        {"event": "runner_on_start", "event_data": {"host": "b", "task": "Install"}},
        {"event": "runner_on_ok", "event_data": {"host": "a", "res": {"changed": True}}},
        {
            "event": "runner_on_failed",
            "event_data": {"host": "b", "task": "Install", "ignore_errors": True, "res": {}},
        },
        {"event": "playbook_on_task_start", "event_data": {"task": "Configure"}},
        {
            "event": "runner_on_failed",
            "event_data": {"host": "b", "task": "Configure", "res": {"msg": "bad"}},
        },
    ]
    for event in events:
        assert state(event) is True  # every event stays in the artifacts
    assert state.task_number == 2
    assert state.task_name == "Configure"
    a, b = state.hosts["a"], state.hosts["b"]
    assert (a.ok, a.changed, a.task_in_progress) == (1, 1, None)
    assert (b.ignored, b.failures, b.failed_task, b.message) == (1, 1, "Configure", "bad")
    # Each task keeps its own outcome per host, for the log of ended tasks.
    install, configure = state.tasks
    assert install.ended
    assert install.outcomes == {"a": TaskOutcome.CHANGED, "b": TaskOutcome.IGNORED}
    assert (configure.ended, configure.outcomes) == (False, {"b": TaskOutcome.FAILED})
    # The stats are the final truth: b's failure was rescued.
    stats = {"ok": {"a": 1, "b": 1}, "changed": {"a": 1}, "rescued": {"b": 1}, "processed": {}}
    state({"event": "playbook_on_stats", "event_data": stats})
    assert (b.failures, b.rescued, b.status) == (0, 1, HostStatus.OK)
    assert state.stats_seen
    assert configure.ended


def test_warnings_are_kept_per_host_once() -> None:
    state = RunState()
    warn = {"warnings": ["oned must be restarted"]}
    for event in (
        {"event": "runner_item_on_ok", "event_data": {"host": "fe", "res": warn}},
        {"event": "runner_on_ok", "event_data": {"host": "fe", "res": warn}},
        {"event": "runner_on_ok", "event_data": {"host": "h1", "res": {"warnings": []}}},
        {"event": "runner_on_failed", "event_data": {"host": "h1", "res": {"warnings": ["x"]}}},
    ):
        state(event)
    assert state.hosts["fe"].warnings == ["oned must be restarted"]
    assert state.hosts["h1"].warnings == ["x"]


def test_ansibles_remote_tmp_notice_is_not_a_warning_of_the_roles() -> None:
    state = RunState()
    notice = (
        "Module remote_tmp /root/.ansible/tmp did not exist and was created with a mode of 0700,"
        " this may cause issues when running as another user."
    )
    res = {"warnings": [notice, "AppArmor does not apply"]}
    state({"event": "runner_on_ok", "event_data": {"host": "h1", "res": res}})
    assert state.hosts["h1"].warnings == ["AppArmor does not apply"]


def test_event_handler_never_raises() -> None:
    state = RunState()
    assert state({"event": "runner_on_ok", "event_data": {}}) is True  # no host: KeyError
    assert isinstance(state.handler_error, KeyError)


@pytest.mark.parametrize(
    ("res", "expected"),
    [
        ({"msg": "boom"}, "boom"),
        ({"censored": "the output has been hidden", "msg": "x"}, "the output has been hidden"),
        ({"msg": "non-zero return code", "stderr": "E: gone"}, "non-zero return code: E: gone"),
        ({"results": [{"failed": False}, {"failed": True, "msg": "item 2"}]}, "item 2"),
        ({"rc": 3}, "exit status 3"),
        ({}, "failed (no message)"),
    ],
)
def test_failure_message(res: dict[str, object], expected: str) -> None:
    assert failure_message(res) == expected


def test_exit_status_prefers_failed_over_unreachable(tmp_path: Path) -> None:
    from kvmprep.runner import HostState

    hosts = (HostState("a", failures=1), HostState("b", unreachable=1))
    result = RunResult(hosts=hosts, artifact_dir=tmp_path, runner_status="failed", rc=2)
    assert result.exit_status is ExitStatus.FAILED
    only_dark = RunResult(hosts=hosts[1:], artifact_dir=tmp_path, runner_status="failed", rc=4)
    assert only_dark.exit_status is ExitStatus.UNREACHABLE


def test_ansible_environment_is_an_allow_list(tmp_path: Path) -> None:
    environ = {
        "HOME": "/home/op",
        "PATH": "/usr/bin",
        "SSH_AUTH_SOCK": "/run/agent",
        "AWS_SECRET_ACCESS_KEY": "nope",
        "ANSIBLE_FORKS": "7",
        "ANSIBLE_COLLECTIONS_PATH": "/op/collections",
        "NO_COLOR": "1",
    }
    env = ansible_environment(environ, collections_path=[tmp_path], color=True, cwd=tmp_path)
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert env["SSH_AUTH_SOCK"] == "/run/agent"
    assert env["ANSIBLE_FORKS"] == "7"  # the operator's value is kept
    assert env["ANSIBLE_COLLECTIONS_PATH"] == f"{tmp_path}{os.pathsep}/op/collections"
    assert env["ANSIBLE_NOCOLOR"] == "True"
    assert env["ANSIBLE_SSH_ARGS"] == "-o ControlMaster=auto -o ControlPersist=60s"
    assert env["PATH"].endswith("/usr/bin")
    default = ansible_environment({"PATH": "/usr/bin"}, color=True, cwd=tmp_path)
    assert default["ANSIBLE_FORKS"] == "20"
    assert default["ANSIBLE_HOST_KEY_CHECKING"] == "True"  # not ansible-runner's False
    assert "ANSIBLE_NOCOLOR" not in default


def test_the_stdout_callback_is_the_one_ansible_runner_reads_events_from(tmp_path: Path) -> None:
    (tmp_path / "ansible.cfg").write_text("[defaults]\nstdout_callback = json\n")
    for environ in ({"ANSIBLE_STDOUT_CALLBACK": "json"}, {}):
        env = ansible_environment(environ, cwd=tmp_path)
        assert env["ANSIBLE_STDOUT_CALLBACK"] == "default", environ


def test_ansible_cfg_choices_are_kept(tmp_path: Path) -> None:
    (tmp_path / "ansible.cfg").write_text(
        "[defaults]\n"
        "forks = 3\n"
        "host_key_checking = False ; a throwaway lab\n"
        "collections_path = my-collections:/shared/collections\n"
        "[ssh_connection]\n"
        "ssh_args = -o ControlMaster=no\n"
    )
    ours = tmp_path / "site"
    env = ansible_environment(
        {"HOME": str(tmp_path / "home")}, collections_path=[ours], cwd=tmp_path
    )
    assert env["ANSIBLE_FORKS"] == "3"
    assert env["ANSIBLE_HOST_KEY_CHECKING"] == "False"
    assert env["ANSIBLE_SSH_ARGS"] == "-o ControlMaster=no"
    assert env["ANSIBLE_PIPELINING"] == "True"
    assert env["ANSIBLE_COLLECTIONS_PATH"].split(os.pathsep) == [
        str(ours),
        str(tmp_path / "my-collections"),
        "/shared/collections",
    ]
    # The environment beats ansible.cfg, as in Ansible.
    env = ansible_environment({"ANSIBLE_FORKS": "9"}, cwd=tmp_path)
    assert env["ANSIBLE_FORKS"] == "9"


def test_collections_path_is_prepended(tmp_path: Path) -> None:
    # kvmprep's own kvmprep.kvm wins over one the operator installed elsewhere, and the
    # operator's collections stay reachable: Ansible's default places when nothing was chosen.
    ours = [tmp_path / "site"]
    env = ansible_environment({"HOME": "/h"}, collections_path=ours, cwd=tmp_path)
    assert env["ANSIBLE_COLLECTIONS_PATH"].split(os.pathsep) == [
        str(ours[0]),
        "~/.ansible/collections",
        "/usr/share/ansible/collections",
    ]
    assert "ANSIBLE_COLLECTIONS_PATH" not in ansible_environment({}, cwd=tmp_path)
    # An ansible.cfg's collections_path stays searched (after ours), relative to the file.
    (tmp_path / "ansible.cfg").write_text("[defaults]\ncollections_path = cols\n")
    env = ansible_environment({}, collections_path=ours, cwd=tmp_path)
    assert env["ANSIBLE_COLLECTIONS_PATH"].split(os.pathsep) == [
        str(ours[0]),
        str(tmp_path / "cols"),
    ]


def test_artifact_root_dir() -> None:
    assert artifact_root_dir({"KVMPREP_ARTIFACT_DIR": "/x/runs"}) == Path("/x/runs")
    assert artifact_root_dir({"XDG_STATE_HOME": "/state", "HOME": "/h"}) == Path(
        "/state/kvmprep/runs"
    )
    expected = Path("/h/.local/state/kvmprep/runs")
    assert artifact_root_dir({"HOME": "/h"}) == expected
    assert artifact_root_dir({"XDG_STATE_HOME": "relative", "HOME": "/h"}) == expected


def test_prune_keeps_the_newest_runs_and_any_run_still_going(tmp_path: Path) -> None:
    now = 1_000_000.0
    runs = []
    for age_hours in range(6):
        run = tmp_path / f"run-{age_hours}"
        (run / "job_events").mkdir(parents=True)
        (run / "stdout").write_text("x")
        stamp = now - age_hours * 7200
        for path in (run / "job_events", run / "stdout", run):
            os.utime(path, (stamp, stamp))
        runs.append(run)
    # The oldest run started long ago but wrote an event a minute ago: it is still going.
    os.utime(runs[5] / "job_events", (now - 60, now - 60))

    removed = prune_artifacts(tmp_path, keep=1, active_seconds=3600, now=now)

    # run-5 is the newest by its last write; run-0 is beyond `keep` but was written just now.
    assert sorted(removed) == sorted(runs[1:5])
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["run-0", "run-5"]
