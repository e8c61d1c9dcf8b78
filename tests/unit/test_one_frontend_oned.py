"""apply's view of whether oned runs with the files on disk (roles/one_frontend/tasks/main.yml),
which must agree with check's ONE-011."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.opennebula import CLOCK_SLACK
from tests.unit.ansible_env import run_module_locally
from tests.unit.test_kvm_host_conf import ROOT

ROLE_VARS = yaml.safe_load((ROOT / "roles/one_frontend/vars/main.yml").read_text())


def test_apply_and_check_allow_the_same_clock_slack() -> None:
    assert ROLE_VARS["__one_frontend_oned_clock_slack"] == CLOCK_SLACK


def test_gather_oned_reports_only_oned_and_the_files_it_reads(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    (etc / "vmm_exec").mkdir(parents=True)
    (etc / "vmm_exec" / "vmm_exec_kvm.conf").write_text('OS = [ MACHINE = "q35" ]\n')
    os.utime(etc / "vmm_exec" / "vmm_exec_kvm.conf", (1700000000.5, 1700000000.5))
    result = run_module_locally(
        tmp_path, "kvmprep.kvm.one_frontend_probe", {"gather": "oned", "etc_dir": str(etc)}
    )
    assert result.get("failed") is not True, result
    probe = result["probe"]
    assert set(probe) == {"oned", "files"}
    assert probe["files"]["vmm_exec_kvm.conf"] == {
        "path": str(etc / "vmm_exec" / "vmm_exec_kvm.conf"),
        "mtime": 1700000000.5,
    }
    assert probe["files"]["oned.conf"]["mtime"] is None
    assert probe["oned"]["running"] in (True, False)
