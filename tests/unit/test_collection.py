"""The repository root is the Ansible collection kvmprep.kvm: its metadata agrees with the
Python package's, its content is named by FQCN, it depends on nothing of the kvmprep package,
and ``ansible-galaxy collection build`` makes the artifact of the collection only."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO_ROOT
from packaging.specifiers import SpecifierSet

from kvmprep import content
from tests.unit.ansible_env import ansible_env

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
GALAXY = yaml.safe_load((REPO_ROOT / "galaxy.yml").read_text())
MODULES = sorted(p.stem for p in (REPO_ROOT / "plugins" / "modules").glob("*.py"))
FILTERS = ("one_frontend_common_machine_type", "one_frontend_etc_hosts")
ROLES = ("kvm_host", "one_frontend")


def test_galaxy_metadata_agrees_with_the_package() -> None:
    assert f"{GALAXY['namespace']}.{GALAXY['name']}" == content.FQCN == "kvmprep.kvm"
    assert GALAXY["version"] == PYPROJECT["project"]["version"]
    assert GALAXY["dependencies"] == {}


def test_requires_ansible_is_the_packages_ansible_core_range() -> None:
    runtime = yaml.safe_load((REPO_ROOT / "meta" / "runtime.yml").read_text())
    (core,) = [d for d in PYPROJECT["project"]["dependencies"] if d.startswith("ansible-core")]
    ours = SpecifierSet(runtime["requires_ansible"])
    theirs = SpecifierSet(core.removeprefix("ansible-core"))
    for version in ("2.18.9", "2.19.0", "2.20.3", "2.21.99", "2.22.0", "2.23.1"):
        assert (version in ours) == (version in theirs), version


def _tasks(node: Any) -> list[dict[str, Any]]:
    """Every task of a task file or playbook, blocks and handlers included."""
    found: list[dict[str, Any]] = []
    if isinstance(node, list):
        for item in node:
            found += _tasks(item)
    elif isinstance(node, dict):
        found.append(node)
        for key in ("tasks", "pre_tasks", "post_tasks", "handlers", "block", "rescue", "always"):
            found += _tasks(node.get(key))
    return found


def _content_yaml() -> list[Path]:
    files = [*(REPO_ROOT / "playbooks").glob("*.yml")]
    for role in ROLES:
        files += (REPO_ROOT / "roles" / role / "tasks").glob("*.yml")
        files += (REPO_ROOT / "roles" / role / "handlers").glob("*.yml")
    return sorted(files)


def test_modules_roles_and_filters_are_named_by_fqcn() -> None:
    bare: list[str] = []
    used: set[str] = set()
    for path in _content_yaml():
        text = path.read_text()
        where = path.relative_to(REPO_ROOT)
        for task in _tasks(yaml.safe_load(text)):
            for key, value in task.items():
                if key in MODULES:
                    bare.append(f"{where}: module {key}")
                if key.startswith("kvmprep.kvm."):
                    used.add(key)
                if key.endswith(("import_role", "include_role")) and isinstance(value, dict):
                    if not str(value.get("name", "")).startswith("kvmprep.kvm."):
                        bare.append(f"{where}: role {value.get('name')}")
                    used.add(value["name"])
            for role in task.get("roles") or []:
                name = role["role"] if isinstance(role, dict) else role
                if not name.startswith("kvmprep.kvm."):
                    bare.append(f"{where}: role {name}")
                used.add(name)
        for name in FILTERS:
            # A filter by its short name: "| one_frontend_etc_hosts", not "| kvmprep.kvm.…".
            if re.search(rf"\|\s*{name}\b", text):
                bare.append(f"{where}: filter {name}")
            if re.search(rf"\|\s*kvmprep\.kvm\.{name}\b", text):
                used.add(f"kvmprep.kvm.{name}")
    assert not bare
    # The check fails if the scan finds nothing at all (a renamed key, a moved file).
    assert {"kvmprep.kvm.kvm_host", "kvmprep.kvm.one_frontend"} <= used
    assert {"kvmprep.kvm.kvm_host_probe", "kvmprep.kvm.kvm_host_plan"} <= used
    assert {f"kvmprep.kvm.{name}" for name in FILTERS} <= used


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_collection_imports_nothing_of_the_kvmprep_package() -> None:
    # The dependency points from the CLI to the collection: AWX runs the collection alone.
    files = sorted((REPO_ROOT / "plugins").rglob("*.py"))
    assert len(files) > 30
    for path in files:
        offending = {n for n in _imports(path) if n == "kvmprep" or n.startswith("kvmprep.")}
        assert not offending, f"{path.relative_to(REPO_ROOT)} imports {offending}"
    # Its module_utils are imported under the collection's name, never ansible.module_utils.X.
    own = {p.stem for p in (REPO_ROOT / "plugins" / "module_utils").glob("*.py")}
    for path in files:
        for name in _imports(path):
            assert name.split(".")[-1] not in own or name.startswith(
                "ansible_collections.kvmprep.kvm.plugins.module_utils."
            ), f"{path.relative_to(REPO_ROOT)}: {name}"


def test_the_cli_imports_its_judges_from_the_collection() -> None:
    from kvmprep import judge

    utils = REPO_ROOT / "plugins" / "module_utils"
    assert Path(judge.kvm_host_judge.__file__).resolve() == utils / "kvm_host_judge.py"
    assert Path(judge.machine_types.__file__).resolve() == utils / "machine_types.py"
    assert judge.judge() is judge.kvm_host_judge
    assert not (REPO_ROOT / "kvmprep" / "controls" / "machines.py").exists()
    # The controls too: the check action plugin judges with them where no kvmprep is installed.
    from kvmprep import check

    controls = REPO_ROOT / "plugins" / "plugin_utils" / "controls"
    check.import_judges()
    evaluate = sys.modules["ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.evaluate"]
    assert Path(evaluate.__file__).resolve() == controls / "evaluate.py"
    assert not (REPO_ROOT / "kvmprep" / "controls").exists()


def test_the_roles_keep_no_plugins_of_their_own() -> None:
    for role in ROLES:
        for kind in ("library", "module_utils", "action_plugins", "filter_plugins"):
            assert not (REPO_ROOT / "roles" / role / kind).exists(), f"roles/{role}/{kind}"


@pytest.mark.build
def test_galaxy_build_makes_the_collection_only(tmp_path: Path) -> None:
    galaxy = shutil.which("ansible-galaxy", path=str(Path(sys.executable).parent))
    assert galaxy is not None
    subprocess.run(
        [galaxy, "collection", "build", "--output-path", str(tmp_path), str(REPO_ROOT)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (artifact,) = tmp_path.glob("kvmprep-kvm-*.tar.gz")
    assert artifact.name == f"kvmprep-kvm-{GALAXY['version']}.tar.gz"
    with tarfile.open(artifact) as tar:
        names = set(tar.getnames())
    for wanted in (
        "MANIFEST.json",
        "meta/runtime.yml",
        "plugins/modules/kvm_host_probe.py",
        "plugins/module_utils/kvm_host_judge.py",
        "plugins/action/kvm_host_plan.py",
        "plugins/plugin_utils/controls/catalog.py",
        "plugins/filter/one_frontend.py",
        "plugins/inventory/opennebula_hosts.py",
        "roles/kvm_host/tasks/main.yml",
        "roles/one_frontend/tasks/main.yml",
        "playbooks/apply.yml",
        "playbooks/audit.yml",
        "playbooks/check.yml",
    ):
        assert wanted in names, wanted
    tops = {name.split("/")[0] for name in names}
    for unwanted in (
        *("tests", "kvmprep", "molecule", "bench", "lab"),
        *(".venv", ".venv-collection", ".ansible"),
    ):
        assert unwanted not in tops, unwanted
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert "pyproject.toml" not in names


@pytest.mark.ansible
@pytest.mark.parametrize("playbook", ["apply", "audit", "check"])
def test_the_playbooks_run_by_fqcn(tmp_path: Path, playbook: str) -> None:
    """As AWX or a plain ansible-playbook runs them: by FQCN, with only the collection on the
    collections path (no kvmprep CLI, no ANSIBLE_LIBRARY or roles path)."""
    binary = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
    assert binary is not None
    (tmp_path / "hosts.yml").write_text("kvm_hosts:\n  hosts:\n    kvm1:\n")
    proc = subprocess.run(
        [binary, "-i", "hosts.yml", "--syntax-check", f"kvmprep.kvm.{playbook}"],
        cwd=tmp_path,
        env=ansible_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Resolved through the collections path, to the collection kvmprep runs.
    expected = content.collections_dir() / "ansible_collections/kvmprep/kvm/playbooks"
    assert f"playbook: {expected / playbook}.yml" in proc.stdout
