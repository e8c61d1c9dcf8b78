"""The remotes copy and what check compares: local state on the hosts (the monitoring probes'
databases, caches) and the front-end's backups are neither copied nor deleted nor compared, so
a second apply copies nothing and a converged host passes ONE-001."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

import yaml

from tests.unit.test_kvm_host_conf import ROOT, load_library_module

oneadmin = load_library_module("kvm_host_oneadmin", ROOT / "plugins/module_utils")
ssh = load_library_module("one_frontend_ssh", library=ROOT / "plugins" / "modules")
ROLE_VARS = yaml.safe_load((ROOT / "roles/one_frontend/vars/main.yml").read_text())
EXCLUDES = ROLE_VARS["__one_frontend_rsync_excludes"]
ME = pwd.getpwuid(os.geteuid()).pw_name


def test_the_copy_leaves_out_what_the_digest_leaves_out() -> None:
    # rsync's form of each of the module_utils' patterns: a name anywhere, a directory anywhere,
    # a path anchored at the top of the tree.
    wanted = [
        *oneadmin.REMOTES_LOCAL_NAMES,
        *(f"{name}/" for name in oneadmin.REMOTES_LOCAL_DIRS),
        *(f"/{path}" for path in oneadmin.REMOTES_LOCAL_PATHS),
    ]
    assert sorted(EXCLUDES) == sorted(wanted)


def _front_end(root: Path) -> None:
    (root / "vmm" / "kvm").mkdir(parents=True)
    (root / "im" / "kvm-probes.d").mkdir(parents=True)
    (root / "etc" / "vmm" / "kvm").mkdir(parents=True)
    (root / "VERSION").write_text("7.5.80\n")
    (root / "vmm" / "kvm" / "deploy").write_text("#!/bin/sh\n")
    (root / "im" / "kvm-probes.d" / "probe.rb").write_text("puts 1\n")
    (root / "etc" / "vmm" / "kvm" / "kvmrc").write_text("export QEMU_PROTOCOL=qemu+tls\n")
    # What one_frontend_conf's backup leaves beside kvmrc.
    (root / "etc" / "vmm" / "kvm" / "kvmrc.1234.2026-12-02@06:00:00~").write_text("old\n")


def _host_state(root: Path) -> None:
    (root / "im").mkdir(parents=True, exist_ok=True)
    (root / "im" / "status_kvm_3.db").write_text("probe state")
    (root / "im" / "status_kvm_3.db-journal").write_text("probe journal")
    (root / "vmm" / "kvm" / "__pycache__").mkdir(parents=True, exist_ok=True)
    (root / "vmm" / "kvm" / "__pycache__" / "x.pyc").write_text("cache")


def test_the_digest_leaves_out_backups_caches_and_probe_state(tmp_path: Path) -> None:
    _front_end(tmp_path / "fe")
    found = oneadmin.remotes_digest(str(tmp_path / "fe"), ME)
    assert set(found["files"]) == {
        "VERSION",
        "vmm/kvm/deploy",
        "im/kvm-probes.d/probe.rb",
        "etc/vmm/kvm/kvmrc",
    }
    _host_state(tmp_path / "fe")
    assert oneadmin.remotes_digest(str(tmp_path / "fe"), ME)["tree"] == found["tree"]
    # A driver file that differs still counts.
    (tmp_path / "fe" / "vmm" / "kvm" / "deploy").write_text("#!/bin/sh\nexit 1\n")
    assert oneadmin.remotes_digest(str(tmp_path / "fe"), ME)["tree"] != found["tree"]


def _rsync(source: Path, dest: Path) -> list[str]:
    """The role's copy (tasks/node.yml) to a local directory: the same options and excludes."""
    argv = [
        "rsync",
        "-Laz",
        "--omit-dir-times",
        "--delete",
        "--checksum",
        "--itemize-changes",
        *(f"--exclude={pattern}" for pattern in EXCLUDES),
        f"{source}/",
        f"{dest}/",
    ]
    result = subprocess.run(argv, capture_output=True, text=True, check=True)
    return [line for line in result.stdout.splitlines() if line.strip()]


def test_a_second_copy_copies_and_deletes_nothing(tmp_path: Path) -> None:
    fe, host = tmp_path / "fe", tmp_path / "host"
    _front_end(fe)
    host.mkdir()
    (host / "stale-script").write_text("gone after the copy")
    first = _rsync(fe, host)
    assert any("vmm/kvm/deploy" in line for line in first)
    assert not (host / "stale-script").exists()
    assert not list((host / "etc" / "vmm" / "kvm").glob("*~"))
    # The host's monitoring writes its state; the next copy leaves it, and has nothing to do.
    _host_state(host)
    assert _rsync(fe, host) == []
    # The probes' database comes and goes in im/ (moving its time): still nothing to do.
    (host / "im" / "status_kvm_3.db-journal").unlink()
    os.utime(host / "im", (1700000000, 1700000000))
    assert _rsync(fe, host) == []
    assert (host / "im" / "status_kvm_3.db").read_text() == "probe state"
    assert (host / "vmm" / "kvm" / "__pycache__" / "x.pyc").exists()
    assert (
        oneadmin.remotes_digest(str(host), ME)["tree"]
        == oneadmin.remotes_digest(str(fe), ME)["tree"]
    )


MARKER = "# {mark} kvmprep: OpenNebula front-end and hosts"


def test_block_lines_reads_only_the_managed_block(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(
        "one,10.0.0.1 ssh-ed25519 AAAAmine\n"
        "# BEGIN kvmprep: OpenNebula front-end and hosts\n"
        "kvm1 ssh-ed25519 AAAA1\n"
        "kvm2 ssh-ed25519 AAAA2\n"
        "# END kvmprep: OpenNebula front-end and hosts\n"
        "other ssh-rsa AAAAother\n"
    )
    assert ssh.block_lines(str(known), MARKER) == [
        "kvm1 ssh-ed25519 AAAA1",
        "kvm2 ssh-ed25519 AAAA2",
    ]
    assert ssh.block_lines(str(tmp_path / "none"), MARKER) == []
    (tmp_path / "no-block").write_text("kvm1 ssh-ed25519 AAAA1\n")
    assert ssh.block_lines(str(tmp_path / "no-block"), MARKER) == []


def test_block_lines_does_not_follow_a_link(tmp_path: Path) -> None:
    # Root reads oneadmin's files: a link oneadmin planted must not make it read another file.
    target = tmp_path / "root-only"
    target.write_text(
        "# BEGIN kvmprep: OpenNebula front-end and hosts\nsecret\n"
        "# END kvmprep: OpenNebula front-end and hosts\n"
    )
    (tmp_path / "known_hosts").symlink_to(target)
    assert ssh.block_lines(str(tmp_path / "known_hosts"), MARKER) == []
