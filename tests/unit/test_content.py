"""Finding the Ansible content, from a source checkout and from an installed wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from kvmprep import content
from kvmprep.exitcodes import KvmprepError


def test_source_checkout_uses_the_repository_root() -> None:
    assert content.content_root() == REPO_ROOT
    assert content.playbook("apply") == REPO_ROOT / "playbooks" / "apply.yml"
    assert content.roles_path() == REPO_ROOT / "roles"


def test_unknown_playbook_is_a_clear_error() -> None:
    with pytest.raises(KvmprepError, match=r"playbook 'no-such' not found"):
        content.playbook("no-such")


def _source_files(top: str) -> set[str]:
    root = REPO_ROOT / top
    return {
        p.relative_to(REPO_ROOT).as_posix()
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import hatchling  # noqa: F401  (the test extra installs it; a missing one must fail)

    out = tmp_path_factory.mktemp("wheel")
    # No build isolation: hatchling from this environment, no package index needed (~3 s).
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*pip_wheel, "-q", "-w", str(out), str(REPO_ROOT)],
        check=True,
        timeout=120,
    )
    (built,) = out.glob("kvmprep-*.whl")
    return built


@pytest.mark.build
def test_wheel_carries_the_ansible_content(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "kvmprep/_content/playbooks/apply.yml" in names
    assert "kvmprep/cli.py" in names
    role_files = _source_files("roles/kvm_host")
    assert role_files, "roles/kvm_host has no files"
    for top in ("playbooks", "roles", "inventory", "plugins"):
        missing = {f"kvmprep/_content/{f}" for f in _source_files(top)} - names
        assert not missing, f"not in the wheel: {sorted(missing)}"


@pytest.mark.build
def test_installed_wheel_finds_its_own_content(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = "from kvmprep import content; print(content.playbook('apply'))"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
    )
    assert Path(proc.stdout.strip()) == site / "kvmprep" / "_content" / "playbooks" / "apply.yml"
