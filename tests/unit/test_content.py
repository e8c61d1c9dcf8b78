"""Finding the Ansible content, from a source checkout and from an installed wheel."""

from __future__ import annotations

import json
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


def test_source_checkout_is_linked_as_a_collection() -> None:
    top = content.collections_dir()
    link = top / "ansible_collections" / "kvmprep" / "kvm"
    assert link.is_symlink()
    assert link.resolve() == REPO_ROOT.resolve()
    assert top == REPO_ROOT / ".ansible" / "collections"


def test_a_stale_link_is_replaced_and_a_copy_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A moved checkout leaves a link to its old place; a tool may have put a copy there.
    checkout = tmp_path / "checkout"
    (checkout / "playbooks").mkdir(parents=True)
    (checkout / "playbooks" / "apply.yml").write_text("[]\n")
    (checkout / "meta").mkdir()
    (checkout / "meta" / "runtime.yml").write_text("requires_ansible: '>=2.19'\n")
    link = checkout / ".ansible" / "collections" / "ansible_collections" / "kvmprep" / "kvm"
    link.parent.mkdir(parents=True)
    link.symlink_to(tmp_path / "old-place")
    monkeypatch.setattr(content, "content_root", lambda: checkout)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    content.collections_dir.cache_clear()
    try:
        assert content.collections_dir() == checkout / ".ansible" / "collections"
        assert link.readlink() == checkout
        # A copy as ansible-compat installs one (ansible-lint's prerun) is replaced.
        link.unlink()
        link.mkdir()
        (link / "MANIFEST.json").write_text(
            json.dumps({"collection_info": {"namespace": "kvmprep", "name": "kvm"}})
        )
        content.collections_dir.cache_clear()
        assert content.collections_dir() == checkout / ".ansible" / "collections"
        assert link.readlink() == checkout
        # Any other directory is left alone: the user's cache is used instead.
        link.unlink()
        link.mkdir()
        (link / "mine").write_text("not kvmprep's\n")
        content.collections_dir.cache_clear()
        top = content.collections_dir()
        assert top.is_relative_to(tmp_path / "cache")
        assert (top / "ansible_collections" / "kvmprep" / "kvm").readlink() == checkout
        assert (link / "mine").is_file()
        assert not list(link.parent.glob(".kvm.*")), "a staged link was left behind"
    finally:
        content.collections_dir.cache_clear()


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


COLLECTION = "ansible_collections/kvmprep/kvm"


@pytest.mark.build
def test_wheel_carries_the_collection(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert f"{COLLECTION}/playbooks/apply.yml" in names
    assert f"{COLLECTION}/galaxy.yml" in names
    assert f"{COLLECTION}/meta/runtime.yml" in names
    assert "kvmprep/cli.py" in names
    role_files = _source_files("roles/kvm_host")
    assert role_files, "roles/kvm_host has no files"
    for top in ("playbooks", "roles", "inventory", "plugins", "meta"):
        missing = {f"{COLLECTION}/{f}" for f in _source_files(top)} - names
        assert not missing, f"not in the wheel: {sorted(missing)}"
    # The package does not carry a second copy, and the collection no Python package.
    assert not [n for n in names if n.startswith("kvmprep/_content/")]
    assert not [n for n in names if n.startswith(f"{COLLECTION}/kvmprep/")]


@pytest.mark.build
def test_installed_wheel_runs_and_imports_its_own_collection(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "from kvmprep import content, judge; "
        "print(content.playbook('apply')); print(content.collections_dir()); "
        "print(judge.kvm_host_judge.__file__)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
    )
    playbook, top, judge = proc.stdout.split()
    assert Path(playbook) == site / COLLECTION / "playbooks" / "apply.yml"
    # site-packages is the collections directory: no link is made for an installed wheel.
    assert Path(top) == site
    assert Path(judge) == site / COLLECTION / "plugins" / "module_utils" / "kvm_host_judge.py"
    assert not (tmp_path / ".ansible").exists()
