"""How AWX / Ansible Automation Platform runs kvmprep.kvm: the execution environment's build
context (``ansible-builder create``, then the build's own collection install and dependency
introspection replayed from that context), and ``ansible-runner run`` on a private data
directory laid out as AWX lays out a job's, with the collection installed from its tarball.

Offline throughout: Galaxy and any HTTP proxy point at a closed port of loopback, and every
command runs in a clean environment (no ANSIBLE_* of the test's, no kvmprep checkout on a path).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO_ROOT

from kvmprep import check

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
GALAXY = yaml.safe_load((REPO_ROOT / "galaxy.yml").read_text())
EE = yaml.safe_load((REPO_ROOT / "execution-environment.yml").read_text())
TARBALL = f"kvmprep-kvm-{GALAXY['version']}.tar.gz"
BIN = Path(sys.executable).parent
# Port 9 (discard) of loopback: nothing listens, a request fails at once.
NOWHERE = "http://127.0.0.1:9"

# ==== THE ANSIBLE-RUNNER DEMO: its playbook and what its run must show ====
# kvmprep.kvm.check judges the hosts: the job fails exactly when a host is not compliant (this
# machine is no KVM host in CI), and AWX shows the kvmprep.check/1 report as the job's artifacts
# (set_stats: the playbook_on_stats event's artifact_data).
DEMO_PLAYBOOK = "kvmprep.kvm.check"
DEMO_ARTIFACT = "kvmprep_check"
# The task whose result proves the collection ran, where it lives in the collection, and the key
# its result must hold (kvmprep/check.py reads the facts from it).
DEMO_TASK = check.PROBE_TASK
DEMO_TASK_FILE = "playbooks/audit.yml"
DEMO_RESULT_KEY = "probe"
# ==== end of the demo's settings ====


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """Only what a job's process gets: no ANSIBLE_* and no path of the test's environment."""
    return {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        **dict.fromkeys(("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"), NOWHERE),
        **extra,
    }


def run(cmd: list[str], cwd: Path, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        cmd, cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, (
        f"{shlex.join(cmd)}: rc {proc.returncode}\n{proc.stdout}{proc.stderr}"
    )
    return proc


def tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN))
    assert found is not None, (
        f"{name} is not installed next to {sys.executable} (pip install .[test])"
    )
    return found


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The collection's artifact, as an operator builds it for AWX's project or the EE."""
    out = tmp_path_factory.mktemp("dist")
    run(
        [tool("ansible-galaxy"), "collection", "build", "--output-path", str(out), str(REPO_ROOT)],
        out,
        clean_env(out),
    )
    return out / TARBALL


def _pins(requirements: list[str]) -> dict[str, str]:
    """{"ansible-core": ">=2.19,<2.22", ...} from requirement strings."""
    pins: dict[str, str] = {}
    for line in requirements:
        match = re.match(r"\s*([A-Za-z0-9_.-]+)\s*([^#;]*)", line)
        assert match, line
        pins[match[1].lower()] = match[2].replace(" ", "")
    return pins


def _lines(path: Path) -> list[str]:
    text = path.read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_the_ee_pins_what_the_package_requires() -> None:
    ours = _pins(PYPROJECT["project"]["dependencies"])
    deps = EE["dependencies"]
    assert EE["version"] == 3
    assert _pins([deps["ansible_core"]["package_pip"]]) == {"ansible-core": ours["ansible-core"]}
    assert _pins([deps["ansible_runner"]["package_pip"]]) == {
        "ansible-runner": ours["ansible-runner"]
    }
    # The collection's own list, which the EE names: pyone as the package pins it.
    assert _pins(_lines(REPO_ROOT / "meta" / "requirements.txt"))["pyone"] == ours["pyone"]
    assert deps["python"] == "meta/requirements.txt"
    assert deps["system"] == "meta/bindep.txt"
    (collection,) = deps["galaxy"]["collections"]
    assert collection == {"name": f"collections/{TARBALL}", "type": "file"}


@pytest.mark.build
def test_the_collection_declares_its_ee_dependencies(tarball: Path) -> None:
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
        member = tar.extractfile("meta/execution-environment.yml")
        assert member is not None
        meta = yaml.safe_load(member.read())
    assert meta["dependencies"] == {"python": "meta/requirements.txt", "system": "meta/bindep.txt"}
    assert {"meta/requirements.txt", "meta/bindep.txt"} <= names
    # The EE definition builds this repository's image; it is no content of the collection.
    assert "execution-environment.yml" not in names


@pytest.fixture(scope="module")
def context(tarball: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``ansible-builder create`` on the repository's definition, the tarball in dist/ beside it
    (a copy of the definition and the files it names: the checkout is not written to)."""
    project = tmp_path_factory.mktemp("ee")
    shutil.copy(REPO_ROOT / "execution-environment.yml", project)
    (project / "meta").mkdir()
    for name in ("requirements.txt", "bindep.txt"):
        shutil.copy(REPO_ROOT / "meta" / name, project / "meta")
    (project / "dist").mkdir()
    shutil.copy(tarball, project / "dist")
    run(
        [
            tool("ansible-builder"),
            "create",
            *("--file", "execution-environment.yml"),
            *("--context", "context", "--output-filename", "Containerfile"),
        ],
        project,
        clean_env(project, ANSIBLE_GALAXY_SERVER=NOWHERE),
    )
    return project / "context"


@pytest.mark.build
def test_ansible_builder_create_makes_the_build_context(context: Path, tarball: Path) -> None:
    build = context / "_build"
    assert (build / "collections" / TARBALL).read_bytes() == tarball.read_bytes()
    assert yaml.safe_load((build / "requirements.yml").read_text()) == {
        "collections": [{"name": f"collections/{TARBALL}", "type": "file"}]
    }
    assert "pyone>=7,<8" in _lines(build / "requirements.txt")
    assert "openssh-clients [platform:rpm]" in _lines(build / "bindep.txt")
    containerfile = (context / "Containerfile").read_text()
    args = dict(re.findall(r'^ARG (\w+)="(.*)"$', containerfile, re.MULTILINE))
    assert args["EE_BASE_IMAGE"] == EE["images"]["base_image"]["name"]
    assert args["ANSIBLE_GALAXY_CLI_COLLECTION_OPTS"] == "--offline"
    assert _pins(args["ANSIBLE_INSTALL_REFS"].split()) == {
        "ansible-core": ">=2.19,<2.22",
        "ansible-runner": ">=2.3,<3",
    }
    # The stages that install them: the collection from the context, then the Python and
    # system packages introspection gathers (the user's lists and the collection's).
    for step in (
        "COPY _build /build",
        "ansible-galaxy collection install $ANSIBLE_GALAXY_CLI_COLLECTION_OPTS -r requirements.yml",
        "COPY _build/requirements.txt requirements.txt",
        "COPY _build/bindep.txt bindep.txt",
        "introspect --user-pip=requirements.txt --user-bindep=bindep.txt",
        "RUN /output/scripts/assemble",
        "RUN /output/scripts/install-from-bindep",
    ):
        assert step in containerfile, step


def _step(containerfile: str, marker: str) -> str:
    (line,) = [x for x in containerfile.splitlines() if x.startswith("RUN ") and marker in x]
    return line.removeprefix("RUN ")


@pytest.mark.build
def test_the_builds_collection_install_and_introspection_work_offline(
    context: Path, tmp_path: Path
) -> None:
    """The galaxy and builder stages' own commands, as the Containerfile has them, run here
    against the context (paths of the image moved into tmp_path): the tarball installs without
    Galaxy, and introspection finds pyone and the SSH client in the installed collection."""
    containerfile = (context / "Containerfile").read_text()
    args = dict(re.findall(r'^ARG (\w+)="(.*)"$', containerfile, re.MULTILINE))
    image = tmp_path / "usr-share-ansible"
    env = clean_env(
        tmp_path,
        ANSIBLE_GALAXY_CLI_COLLECTION_OPTS=args["ANSIBLE_GALAXY_CLI_COLLECTION_OPTS"],
        ANSIBLE_GALAXY_SERVER=NOWHERE,
        # The image's Python has no collection in site-packages; this venv may have (a wheel
        # of kvmprep), and ansible-galaxy would take that copy for installed ("Nothing to do").
        ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="False",
        PYCMD=sys.executable,
    )
    install = _step(containerfile, "ansible-galaxy collection install")
    run(["bash", "-c", install.replace("/usr/share/ansible", str(image))], context / "_build", env)
    manifest = image / "collections/ansible_collections/kvmprep/kvm/MANIFEST.json"
    assert json.loads(manifest.read_text())["collection_info"]["version"] == GALAXY["version"]

    introspect = _step(containerfile, "introspect.py introspect")
    introspect = introspect.replace("/output/scripts", str(context / "_build" / "scripts"))
    introspect = introspect.replace("/tmp/src", str(tmp_path / "src"))
    run(["bash", "-c", f"{introspect} {image / 'collections'}"], context / "_build", env)
    pip = _lines(tmp_path / "src" / "requirements.txt")
    bindep = _lines(tmp_path / "src" / "bindep.txt")
    # From the installed collection's meta/execution-environment.yml, not only the EE's lists.
    assert "pyone>=7,<8  # from collection kvmprep.kvm" in pip
    assert "openssh-clients [platform:rpm]  # from collection kvmprep.kvm" in bindep


# ---- ansible-runner, as AWX runs a job ----


def _events(artifacts: Path) -> Iterator[dict[str, Any]]:
    for path in sorted((artifacts / "job_events").glob("*.json")):
        yield json.loads(path.read_text())


@pytest.mark.ansible
def test_ansible_runner_runs_the_collection_from_a_project(tarball: Path, tmp_path: Path) -> None:
    """AWX's job: a project whose collections are installed from the tarball into
    project/collections, an inventory, env/envvars, and ``ansible-runner run``."""
    data = tmp_path / "job"
    project = data / "project"
    project.mkdir(parents=True)
    home = tmp_path / "home"
    home.mkdir()
    collections = project / "collections"
    # --force: ansible-galaxy skips a collection it finds installed anywhere it looks.
    install = [tool("ansible-galaxy"), "collection", "install", "--offline", "--force"]
    run(
        [*install, str(tarball), "-p", str(collections)],
        tmp_path,
        clean_env(home, ANSIBLE_GALAXY_SERVER=NOWHERE),
    )
    (project / "site.yml").write_text(
        "---\n"
        "- name: The collection's playbook, as a job template's playbook imports it\n"
        f"  ansible.builtin.import_playbook: {DEMO_PLAYBOOK}\n"
    )
    # This machine as kvmprep check audits it without -i: local connection, no become.
    (data / "inventory").mkdir()
    with check.local_inventory(sys.executable) as local:
        shutil.copy(local, data / "inventory" / "hosts")
    (data / "env").mkdir()
    (data / "env" / "envvars").write_text(
        yaml.safe_dump({"ANSIBLE_COLLECTIONS_PATH": str(collections)})
    )

    proc = subprocess.run(
        [tool("ansible-runner"), "run", str(data), "-p", "site.yml", "--ident", "demo"],
        cwd=tmp_path,
        env=clean_env(home),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    artifacts = data / "artifacts" / "demo"
    output = proc.stdout + proc.stderr

    # ==== the demo's assertions (see DEMO_* at the top) ====
    events = list(_events(artifacts))
    assert events, f"no job events\n{output}"
    (stats,) = [e["event_data"] for e in events if e["event"] == "playbook_on_stats"]
    report = stats["artifact_data"][DEMO_ARTIFACT]
    assert report["schema"] == "kvmprep.check/1", report
    verdict = report["hosts"][check.LOCAL_HOST]["verdict"]
    assert verdict in ("compliant", "non-compliant"), report
    # ansible-playbook's status: 2 when a host failed (here: judged non-compliant), else 0.
    rc, status = (0, "successful") if verdict == "compliant" else (2, "failed")
    assert proc.returncode == rc, output
    assert (artifacts / "rc").read_text() == str(rc)
    assert (artifacts / "status").read_text() == status
    assert report["exit_status"] == (0 if verdict == "compliant" else 2), report
    (result,) = [
        e["event_data"]
        for e in events
        if e["event"] == "runner_on_ok" and e["event_data"].get("task") == DEMO_TASK
    ]
    assert result["host"] == check.LOCAL_HOST
    assert isinstance(result["res"][DEMO_RESULT_KEY], dict)
    assert result["res"][DEMO_RESULT_KEY]
    # What ran is the collection installed from the tarball, not the checkout.
    installed = collections / "ansible_collections" / "kvmprep" / "kvm"
    assert result["task_path"] == f"{installed / DEMO_TASK_FILE}:{_line_of(DEMO_TASK)}"
    paths = {
        e["event_data"]["task_path"].rsplit(":", 1)[0]
        for e in events
        if "task_path" in e["event_data"]
    }
    assert paths
    assert all(path.startswith(f"{installed}/") for path in paths), paths
    # ==== end of the demo's assertions ====

    # The command ansible-runner ran, with the environment the job got: the clean one, and
    # env/envvars applied.
    command = json.loads((artifacts / "command").read_text())
    assert command["command"][0] == "ansible-playbook"
    assert command["env"]["ANSIBLE_COLLECTIONS_PATH"] == str(collections)
    assert command["env"]["HOME"] == str(home)
    assert command["cwd"] == str(project)


def _line_of(task: str) -> int:
    """The line of the task named ``task`` in DEMO_TASK_FILE (Ansible's task_path)."""
    lines = (REPO_ROOT / DEMO_TASK_FILE).read_text().splitlines()
    (number,) = [
        n for n, line in enumerate(lines, 1) if line.lstrip().startswith(f"- name: {task}")
    ]
    return number
