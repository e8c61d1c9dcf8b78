"""Shared fixtures: the fixture playbooks and a private artifact dir for every real run."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from kvmprep import content, runner

FIXTURES = Path(__file__).parent / "fixtures"
REPO_ROOT = Path(__file__).resolve().parents[2]

# The collection's module_utils, importable as Ansible makes them
# (ansible_collections.kvmprep.kvm.plugins.module_utils.<name>) for the modules the tests load
# by path and for the tests themselves.
content.import_collection()


@pytest.fixture(autouse=True)
def _artifacts_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Never write test runs into the operator's ~/.local/state.
    monkeypatch.setenv("KVMPREP_ARTIFACT_DIR", str(tmp_path / "artifacts"))
    monkeypatch.delenv("NO_COLOR", raising=False)


@pytest.fixture(scope="module")
def run_fixture(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., runner.RunResult]:
    """Run a fixture playbook for real; module-scoped so a run can serve several tests."""

    def run(playbook: str, inventory: str = "inventory.ini", **kwargs: object) -> runner.RunResult:
        artifacts = tmp_path_factory.mktemp("artifacts")
        environ = {**os.environ, "KVMPREP_ARTIFACT_DIR": str(artifacts)}
        environ.update(kwargs.pop("environ", {}))  # type: ignore[arg-type]
        return runner.run_playbook(
            FIXTURES / playbook, [FIXTURES / inventory], environ=environ, **kwargs
        )

    return run
