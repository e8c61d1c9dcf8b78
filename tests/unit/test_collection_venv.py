"""tests/collection-venv.sh: the venv of ansible-core and pyone alone that the frontend lab runs
the installed collection from (issue 18), made by tests/run-all.sh before molecule. Offline: a
venv is only made here with pip kept off PyPI, so what is tested is which versions it takes, when
it reuses a venv and that a failed install is never reused."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "tests" / "collection-venv.sh"
PINS = f"ansible-core=={version('ansible-core')} pyone=={version('pyone')}"


def script(*args: str, venv: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        env={**os.environ, "KVMPREP_COLLECTION_VENV": str(venv), **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_pins_are_the_test_venvs(tmp_path: Path) -> None:
    ran = script("--pins", sys.executable, venv=tmp_path / "v")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == f"{PINS}\n"
    assert not (tmp_path / "v").exists()


def test_a_venv_made_for_the_same_pins_is_reused(tmp_path: Path) -> None:
    venv = tmp_path / "v"
    venv.mkdir()
    (venv / "kvmprep-pins").write_text(f"{PINS}\n")
    (venv / "kept").touch()
    ran = script(sys.executable, venv=venv)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == f"{venv}\n"
    assert (venv / "kept").exists()
    assert not (venv / "bin").exists()


def test_other_pins_make_it_again_and_a_failed_install_is_not_kept(tmp_path: Path) -> None:
    venv = tmp_path / "v"
    venv.mkdir()
    (venv / "kvmprep-pins").write_text("ansible-core==2.19.0 pyone==7.0.0\n")
    (venv / "stale").touch()
    # pip kept off PyPI: the install fails after the venv was made.
    ran = script(sys.executable, venv=venv, PIP_NO_INDEX="1", PIP_FIND_LINKS="")
    assert ran.returncode != 0
    assert ran.stdout == ""
    assert "No matching distribution found for ansible-core==" in ran.stderr, ran.stderr
    assert not (venv / "stale").exists()
    # No pins written: the next run makes it again instead of taking it for made.
    assert not (venv / "kvmprep-pins").exists()
    # Made by the test venv's Python (the same version), not by whatever python3 is on PATH.
    config = dict(line.split(" = ", 1) for line in (venv / "pyvenv.cfg").read_text().splitlines())
    assert config["version"].startswith(f"{sys.version_info.major}.{sys.version_info.minor}.")
    assert config["include-system-site-packages"] == "false"


def test_run_all_makes_it_before_the_lab_where_the_lab_test_looks() -> None:
    run_all = (REPO_ROOT / "tests" / "run-all.sh").read_text()
    made = run_all.index('KVMPREP_COLLECTION_VENV=$(tests/collection-venv.sh "$venv/bin/python")')
    assert run_all.index("export KVMPREP_COLLECTION_VENV", made) < run_all.index("molecule test")
    lab_test = (REPO_ROOT / "molecule" / "frontend" / "tests" / "test_frontend.py").read_text()
    assert 'COLLECTION_VENV = PROJECT / ".venv-collection"' in lab_test
    assert 'os.environ.get("KVMPREP_COLLECTION_VENV")' in lab_test
    assert "dir=${KVMPREP_COLLECTION_VENV:-$project/.venv-collection}" in SCRIPT.read_text()
    assert "`tests/collection-venv.sh .venv/bin/python`" in (REPO_ROOT / "README.md").read_text()
    # Kept out of git and out of the collection's artifact.
    assert ".venv-collection/" in (REPO_ROOT / ".gitignore").read_text().splitlines()
    assert "  - .venv-collection" in (REPO_ROOT / "galaxy.yml").read_text().splitlines()
