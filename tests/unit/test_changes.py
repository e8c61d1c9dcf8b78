"""The change report of ``kvmprep apply`` (kvmprep/changes.py), from a real run of
fixtures/changes.yml through the runner: the exact lines per host, check mode's "would", a
converged host's "no change", the JSON document, and no secret anywhere."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import FIXTURES, REPO_ROOT

from kvmprep import changes, content
from kvmprep.cli import main
from kvmprep.exitcodes import ExitStatus
from kvmprep.runner import Change, RunState, change_lines

INVENTORY = str(FIXTURES / "inventory.ini")
SECRET = "kvmprep-canary-ch4nge-5ecret-93"
ROLE = REPO_ROOT / "roles" / "kvm_host"


def _drifted(root: Path) -> None:
    root.mkdir(parents=True)
    (root / "qemu.conf").write_text('#user = "root"\ndynamic_ownership = 1\nuser = "root"\n')
    (root / "libvirtd.conf").write_text('auth_tcp = "none"\n')
    (root / "kvm").write_text("")
    (root / "kvm").chmod(0o600)
    (root / "group").write_text("")
    (root / "group").chmod(0o600)


def _converged(root: Path) -> None:
    root.mkdir(parents=True)
    (root / "qemu.conf").write_text('dynamic_ownership = 0\nuser = "oneadmin"\n')
    (root / "libvirtd.conf").write_text(
        f'auth_tcp = "sasl"\nsasl_password = "{SECRET}"\ntls_priority = "{SECRET}"\n'
    )
    (root / "rules.d").mkdir(mode=0o755)
    (root / "rules.d").chmod(0o755)
    rule = root / "rules.d" / "65-kvmprep-kvm.rules"
    rule.write_text('KERNEL=="kvm", GROUP="kvm", MODE="0660"\n')
    rule.chmod(0o644)
    (root / "kvm").write_text("")
    (root / "kvm").chmod(0o660)
    (root / "auth.conf").write_text(f"password={SECRET}\n")
    (root / "auth.conf").chmod(0o600)
    (root / "group").write_text("")
    (root / "group").chmod(0o640)


@pytest.fixture
def hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "hosts"
    _drifted(root / "localhost")
    _converged(root / "second")
    monkeypatch.setattr(content, "playbook", lambda _name: FIXTURES / "changes.yml")
    monkeypatch.setenv("ANSIBLE_LIBRARY", str(ROLE / "library"))
    monkeypatch.setenv("ANSIBLE_MODULE_UTILS", str(ROLE / "module_utils"))
    return root


def _apply(root: Path, *extra: str) -> list[str]:
    return [
        "apply",
        "-i",
        INVENTORY,
        "-e",
        f"dir={root}",
        "-e",
        f"kvm_host_libvirt_sasl_password={SECRET}",
        *extra,
    ]


def _section(err: str) -> str:
    return err[err.index("\nChanges") :]


def _expected(root: Path, prefix: str = "") -> list[str]:
    here = root / "localhost"
    return [
        f"  {prefix}{line}"
        for line in (
            "qemu.conf: dynamic_ownership 1 -> 0",
            'qemu.conf: user "root" -> "oneadmin"',
            'libvirtd.conf: auth_tcp "none" -> "sasl"',
            "libvirtd.conf: sasl_password changed",
            'libvirtd.conf: tls_priority not set -> "********"',
            "libvirt restarted once",
            f"{here}/rules.d created",
            f"{here}/rules.d/65-kvmprep-kvm.rules written",
            f"{here}/kvm mode 0600 -> 0660",
            f"{here}/auth.conf written",
            "oneadmin added to kvm",
        )
    ]


@pytest.mark.ansible
def test_apply_lists_each_change_per_host_in_text_and_json(
    hosts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_apply(hosts, "--format", "json")) == ExitStatus.OK
    captured = capsys.readouterr()
    section = _section(captured.err)
    # The summary table comes first, as before; then the changes, plain text.
    assert captured.err.index("HOST ") < captured.err.index("\nChanges:")
    assert "\x1b" not in captured.err
    assert section.splitlines() == [
        "",
        "Changes:",
        "localhost:",
        *_expected(hosts),
        # Tasks that do not say what they changed are named (an item by its label), a no_log
        # one too: never what it hid.
        "  Enable the libvirt units (libvirtd-tcp.socket)",
        "  Set the SASL password",
        "second: no change",
    ]
    document = json.loads(captured.out)
    assert document["schema"] == "kvmprep.changes/1"
    assert document["check_mode"] is False
    assert document["exit_status"] == 0
    assert document["hosts"]["second"] == {"status": "ok", "changes": []}
    local = document["hosts"]["localhost"]
    assert local["status"] == "changed"
    assert [f"  {c['text']}" for c in local["changes"]] == [
        *_expected(hosts),
        "  Enable the libvirt units (libvirtd-tcp.socket)",
        "  Set the SASL password",
    ]
    assert [c["concern"] for c in local["changes"]][:7] == [
        "config",
        "config",
        "config",
        "config",
        "config",
        "restart",
        "files",
    ]
    assert local["changes"][10] == {"concern": "accounts", "text": "oneadmin added to kvm"}
    assert local["changes"][11]["concern"] == "command"
    # The same document in the run's artifacts.
    artifacts = Path(os.environ["KVMPREP_ARTIFACT_DIR"])
    (written,) = artifacts.rglob(changes.ARTIFACT)
    assert json.loads(written.read_text()) == document
    # The secret reached the hosts' files, never a report or an artifact.
    assert SECRET in (hosts / "localhost" / "auth.conf").read_text()
    assert SECRET not in captured.err + captured.out
    leaked = [p for p in artifacts.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaked == []

    # Applied again, both hosts are converged.
    assert main(_apply(hosts)) == ExitStatus.OK
    captured = capsys.readouterr()
    assert captured.out == ""  # no --format json: stdout stays empty
    assert _section(captured.err).splitlines()[1:] == [
        "Changes:",
        "localhost:",
        # Tasks that change on every run by design in this fixture.
        "  Enable the libvirt units (libvirtd-tcp.socket)",
        "  Set the SASL password",
        "  libvirt restarted once",
        "second: no change",
    ]


@pytest.mark.ansible
def test_check_mode_says_would(hosts: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (hosts / "localhost" / "qemu.conf").read_text()
    assert main(_apply(hosts, "--check", "--format", "json")) == ExitStatus.OK
    captured = capsys.readouterr()
    assert (hosts / "localhost" / "qemu.conf").read_text() == before
    assert _section(captured.err).splitlines() == [
        "",
        "Changes (check mode: what a run without --check would change):",
        "localhost:",
        *_expected(hosts, "would: "),
        "second: no change",
    ]
    document = json.loads(captured.out)
    assert document["check_mode"] is True
    assert document["hosts"]["localhost"]["changes"][0]["text"] == (
        "qemu.conf: dynamic_ownership 1 -> 0"
    )
    assert SECRET not in captured.err + captured.out


def test_change_lines_accept_the_convention_s_shapes() -> None:
    assert change_lines({"units": ["a enabled", "b started"]}, default_concern="debug") == [
        Change("units", "a enabled"),
        Change("units", "b started"),
    ]
    assert change_lines(
        [{"concern": "config", "text": "x: k 1 -> 0"}, "plain\n  text", "", 3],
        default_concern="kvm_host_conf",
    ) == [Change("config", "x: k 1 -> 0"), Change("kvm_host_conf", "plain text")]
    assert change_lines(None, default_concern="x") == []


def test_a_loop_s_summary_is_not_reported_twice_and_lines_are_kept_once() -> None:
    state = RunState()
    state({"event": "playbook_on_task_start", "event_data": {"task": "Mask"}})
    item = {"host": "h", "task": "Mask", "task_action": "ansible.builtin.systemd_service"}
    state(
        {
            "event": "runner_item_on_ok",
            "event_data": {**item, "res": {"changed": True, "item": "a"}},
        }
    )
    state(
        {
            "event": "runner_item_on_ok",
            "event_data": {**item, "res": {"changed": False, "item": "b"}},
        }
    )
    loop = {"changed": True, "msg": "All items completed", "results": [{"changed": True}]}
    state({"event": "runner_on_ok", "event_data": {**item, "res": loop, "event_loop": "item"}})
    for _ in range(2):  # a handler that ran at two flushes
        restart = {"changed": True, "kvmprep_changes": {"restart": ["libvirt restarted once"]}}
        state({"event": "runner_on_ok", "event_data": {"host": "h", "task": "R", "res": restart}})
    # A debug notice changes nothing on the host; an item that is a mapping is not shown.
    state(
        {
            "event": "runner_on_ok",
            "event_data": {
                "host": "h",
                "task": "N",
                "task_action": "debug",
                "res": {"changed": True},
            },
        }
    )
    state(
        {
            "event": "runner_item_on_ok",
            "event_data": {
                "host": "h",
                "task": "W",
                "task_action": "copy",
                "res": {"changed": True, "item": {"content": "x"}},
            },
        }
    )
    assert state.hosts["h"].changes == [
        Change("systemd_service", "Mask (a)"),
        Change("restart", "libvirt restarted once"),
        Change("copy", "W"),
    ]
