"""Tests of the kvm_host_files module, end to end through Ansible on this machine."""

from __future__ import annotations

import ast
import grp
import os
import pwd
import stat
from pathlib import Path

import pytest

from tests.unit.test_kvm_host_conf import LIBRARY, load_library_module, run_ansible

files = load_library_module("kvm_host_files")

OWNER = pwd.getpwuid(os.getuid()).pw_name
GROUP = grp.getgrgid(os.getgid()).gr_name


def test_module_source_parses_as_python_3_6():
    ast.parse((LIBRARY / "kvm_host_files.py").read_text(), feature_version=(3, 6))


def _entries(root: Path, content: str = "rule\n") -> list[dict[str, object]]:
    attrs = {"owner": OWNER, "group": GROUP}
    return [
        {"path": str(root / "rules.d"), "state": "directory", "mode": "0755", **attrs},
        {"path": str(root / "rules.d" / "65.rules"), "content": content, "mode": "0640", **attrs},
        {"path": str(root / "link"), "state": "link", "src": "/usr/bin/true", **attrs},
    ]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.ansible
def test_check_then_create_then_nothing_to_do(tmp_path):
    root = tmp_path / "etc"
    root.mkdir()
    args = {"files": _entries(root)}

    checked = run_ansible(tmp_path, "kvm_host_files", args, "--check", "--diff")
    assert checked["changed"] is True
    assert [f["changed"] for f in checked["files"]] == [True, True, True]
    assert sorted(root.iterdir()) == []
    content_diffs = [d for d in checked["diff"] if d.get("after") == "rule\n"]
    assert content_diffs == [
        {
            "before_header": str(root / "rules.d" / "65.rules"),
            "after_header": str(root / "rules.d" / "65.rules"),
            "before": "",
            "after": "rule\n",
        }
    ]

    created = run_ansible(tmp_path, "kvm_host_files", args)
    assert created["changed"] is True
    # Without --diff too: the module returns the changes' diff whatever the mode.
    assert created["diff"] == checked["diff"]
    assert _mode(root / "rules.d") == 0o755
    assert (root / "rules.d" / "65.rules").read_text() == "rule\n"
    assert _mode(root / "rules.d" / "65.rules") == 0o640
    assert str((root / "link").readlink()) == "/usr/bin/true"

    again = run_ansible(tmp_path, "kvm_host_files", args, "--diff")
    assert again["changed"] is False
    assert [f["changed"] for f in again["files"]] == [False, False, False]
    assert "diff" not in again
    # Nothing left behind by the atomic writes.
    assert sorted(p.name for p in (root / "rules.d").iterdir()) == ["65.rules"]


@pytest.mark.ansible
def test_changes_content_mode_and_link_with_backup_and_diff(tmp_path):
    root = tmp_path / "etc"
    (root / "rules.d").mkdir(parents=True)
    target = root / "rules.d" / "65.rules"
    target.write_text("old\n")
    target.chmod(0o600)
    (root / "link").symlink_to("/usr/bin/false")
    entries = _entries(root, content="new\n")
    entries[1]["backup"] = True

    changed = run_ansible(tmp_path, "kvm_host_files", {"files": entries}, "--diff")
    assert changed["changed"] is True
    assert [f["changed"] for f in changed["files"]] == [False, True, True]
    assert target.read_text() == "new\n"
    assert _mode(target) == 0o640
    backup = Path(changed["files"][1]["backup_file"])
    assert backup.read_text() == "old\n"
    assert str((root / "link").readlink()) == "/usr/bin/true"
    texts = [(d["before"], d["after"]) for d in changed["diff"] if isinstance(d["after"], str)]
    assert texts == [("old\n", "new\n")]
    modes = [d for d in changed["diff"] if isinstance(d["after"], dict) and "mode" in d["after"]]
    assert modes[0]["before"]["mode"] == "0600"
    assert modes[0]["after"]["mode"] == "0640"


@pytest.mark.ansible
def test_validate_refuses_and_keeps_the_file(tmp_path):
    target = tmp_path / "sudoers"
    target.write_text("good\n")
    entry = {"path": str(target), "content": "bad\n", "validate": "grep -q good %s"}
    failed = run_ansible(tmp_path, "kvm_host_files", {"files": [entry]})
    assert failed.get("failed") is True
    assert "failed to validate" in failed["msg"]
    assert target.read_text() == "good\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".kvmprep")) == []

    entry["validate"] = "grep -q bad %s"
    passed = run_ansible(tmp_path, "kvm_host_files", {"files": [entry]})
    assert passed["changed"] is True
    assert target.read_text() == "bad\n"


@pytest.mark.ansible
def test_refuses_to_replace_a_file_by_a_link_or_a_directory(tmp_path):
    plain = tmp_path / "plain"
    plain.write_text("x\n")
    link = run_ansible(
        tmp_path,
        "kvm_host_files",
        {"files": [{"path": str(plain), "state": "link", "src": "/usr/bin/true"}]},
    )
    assert link.get("failed") is True
    assert "not a link" in link["msg"]
    directory = run_ansible(
        tmp_path, "kvm_host_files", {"files": [{"path": str(plain), "state": "directory"}]}
    )
    assert directory.get("failed") is True
    assert "not a directory" in directory["msg"]
    assert plain.read_text() == "x\n"


@pytest.mark.ansible
def test_change_report_lines_name_paths_never_content(tmp_path):
    root = tmp_path / "etc"
    root.mkdir()
    secret = "kvmprep-files-canary-41"
    args = {"files": [*_entries(root, content=f"{secret}\n")]}
    created = run_ansible(tmp_path, "kvm_host_files", args)
    assert created["kvmprep_changes"] == [
        {"concern": "files", "text": f"{root}/rules.d created"},
        {"concern": "files", "text": f"{root}/rules.d/65.rules written"},
        {"concern": "files", "text": f"{root}/link linked to /usr/bin/true"},
    ]
    (root / "rules.d" / "65.rules").chmod(0o600)
    (root / "rules.d" / "inner").mkdir()
    recursed = []
    if os.getuid() == 0:  # an entry of another owner under the directory, to give back
        os.chown(root / "rules.d" / "inner", 65534, 65534)
        recursed = [
            {
                "concern": "files",
                "text": f"{root}/rules.d: 1 entries under it given to {OWNER}:{GROUP}",
            }
        ]
    recurse = {**args["files"][0], "recurse": True}
    again = run_ansible(tmp_path, "kvm_host_files", {"files": [recurse, args["files"][1]]})
    assert again["kvmprep_changes"] == [
        *recursed,
        {"concern": "files", "text": f"{root}/rules.d/65.rules mode 0600 -> 0640"},
    ]
    assert "kvmprep_changes" not in again["files"][0]
    assert secret not in str(created["kvmprep_changes"]) + str(again["kvmprep_changes"])
    unchanged = run_ansible(tmp_path, "kvm_host_files", args)
    assert unchanged["changed"] is False
    assert unchanged["kvmprep_changes"] == []


@pytest.mark.ansible
def test_a_secret_file_changes_without_its_content_ever_shown(tmp_path):
    root = tmp_path / "etc"
    root.mkdir()
    old, new = "kvmprep-old-canary-17", "kvmprep-new-canary-23"
    secret = {"path": str(root / "auth.conf"), "content": f"password={old}\n", "mode": "0600"}
    plain = {"path": str(root / "plain.conf"), "content": "plain\n", "mode": "0644"}
    run_ansible(tmp_path, "kvm_host_files", {"secret_files": [secret]})
    assert (root / "auth.conf").read_text() == f"password={old}\n"

    # The password changes, a plain file beside it is written in the same call, in diff mode.
    args = {"files": [plain], "secret_files": [{**secret, "content": f"password={new}\n"}]}
    changed = run_ansible(tmp_path, "kvm_host_files", args, "--diff")
    assert (root / "auth.conf").read_text() == f"password={new}\n"
    assert _mode(root / "auth.conf") == 0o600
    assert [(f["path"], f["changed"]) for f in changed["files"]] == [
        (plain["path"], True),
        (secret["path"], True),
    ]
    shown = str(changed)
    assert old not in shown
    assert new not in shown
    by_path = {d["before_header"]: d for d in changed["diff"]}
    assert by_path[plain["path"]]["after"] == "plain\n"  # an ordinary file keeps its diff
    assert by_path[secret["path"]]["before"] == "(a secret: not shown)\n"
    assert by_path[secret["path"]]["after"] == "(a secret, changed: not shown)\n"
    assert {"concern": "files", "text": f"{secret['path']} written"} in changed["kvmprep_changes"]

    # Its attributes are shown as any file's; the content, unchanged, is not.
    (root / "auth.conf").chmod(0o644)
    again = run_ansible(tmp_path, "kvm_host_files", args, "--diff")
    assert again["diff"] == [
        {
            "before_header": secret["path"],
            "after_header": secret["path"],
            "before": {"path": secret["path"], "mode": "0644"},
            "after": {"path": secret["path"], "mode": "0600"},
        }
    ]
    assert new not in str(again)

    # No validating command for a secret file: its output could show the content.
    checked = {**secret, "validate": "cat %s"}
    refused = run_ansible(tmp_path, "kvm_host_files", {"secret_files": [checked]})
    assert refused["failed"] is True
    assert "validate" in refused["msg"]
    assert old not in str(refused)


@pytest.mark.ansible
def test_the_snapshot_is_taken_before_the_first_write(tmp_path):
    conf = tmp_path / "etc" / "libvirtd.conf"
    conf.parent.mkdir()
    conf.write_text("listen_tcp = 0\n")
    entry = {"path": str(conf), "content": "listen_tcp = 1\n", "mode": "0644"}
    snapshot = {"paths": [str(tmp_path / "etc" / "*.conf")], "dest": str(tmp_path / "snap")}

    checked = run_ansible(
        tmp_path, "kvm_host_files", {"files": [entry], "snapshot": snapshot}, "--check"
    )
    assert checked["changed"] is True
    assert checked["restart_pending"] == []
    assert not (tmp_path / "snap").exists()  # check mode saves nothing
    assert conf.read_text() == "listen_tcp = 0\n"

    done = run_ansible(tmp_path, "kvm_host_files", {"files": [entry], "snapshot": snapshot})
    assert done["changed"] is True
    assert done["restart_pending"] == []
    assert conf.read_text() == "listen_tcp = 1\n"
    saved = tmp_path / "snap" / "tree" / str(conf).lstrip("/")
    assert saved.read_text() == "listen_tcp = 0\n"  # as it was before the call wrote it
    without = run_ansible(tmp_path, "kvm_host_files", {"files": [entry]})
    assert without["changed"] is False
    assert without["restart_pending"] == []
