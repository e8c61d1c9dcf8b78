"""one_frontend_manage_etc_hosts: the role's tasks/etc_hosts.yml run for real against a file
in tmp_path (__one_frontend_etc_hosts_path), from an inventory of a front-end and two hosts on
the local connection; and the filter that validates every name and address first."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError
from conftest import REPO_ROOT

from tests.unit.ansible_env import ansible_env

MARKER = "kvmprep: OpenNebula front-end and hosts"


def _filters() -> Any:
    path = REPO_ROOT / "plugins" / "filter" / "one_frontend.py"
    spec = importlib.util.spec_from_file_location("one_frontend_filters", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


filters = _filters()


# --- the filter: what may reach /etc/hosts -----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("kvm1", True),
        ("kvm-1.example.com", True),
        ("KVM1.Example", True),
        ("a" * 63, True),
        ("a" * 64, False),
        (".".join(["a" * 60] * 5), False),  # longer than 253
        ("", False),
        ("-kvm1", False),
        ("kvm1-", False),
        ("kvm_1", False),
        ("kvm1..example", False),
        ("kvm1.", False),
        ("kvm1 evil", False),
        ("kvm1\n10.0.0.9 victim", False),
        ("kvm1#", False),
        ("kvm1\t", False),
        ("kvmé", False),
        (None, False),
        (17, False),
    ],
)
def test_host_names(name, valid) -> None:
    assert filters.valid_host_name(name) is valid


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.0.0.2", "10.0.0.2"),
        ("fd00::0002", "fd00::2"),
        ("10.0.0.256", None),
        ("kvm1", None),
        ("10.0.0.2 kvm9", None),
        (" 10.0.0.2", None),
        ("fe80::1%eth0", None),
        ("", None),
        (None, None),
    ],
)
def test_ip_addresses(value, expected) -> None:
    assert filters.ip_address(value) == expected


def machine(name: str, *names: str, host: str = "", addresses: Any = ()) -> dict[str, Any]:
    return {"machine": name, "names": [name, *names], "ansible_host": host, "addresses": addresses}


def test_lines_take_ansible_host_when_it_is_an_address_else_the_first_learnt() -> None:
    got = filters.etc_hosts(
        [
            machine("fe", "", host="fe.example.com", addresses=["10.0.0.1", "fd00::1"]),
            machine("h1", "one-h1", host="10.0.0.2", addresses=["192.168.1.2"]),
            machine("h2", "h2", host="", addresses=["10.0.0.3"]),
        ]
    )
    assert got == {
        "lines": ["10.0.0.1 fe", "10.0.0.2 h1 one-h1", "10.0.0.3 h2"],
        "missing": [],
    }


def test_a_machine_without_address_is_missing() -> None:
    got = filters.etc_hosts([machine("fe", addresses=["10.0.0.1"]), machine("h1", host="h1.lan")])
    assert got == {"lines": ["10.0.0.1 fe"], "missing": ["h1"]}


@pytest.mark.parametrize(
    ("machines", "message"),
    [
        ([machine("h1", "bad name", addresses=["10.0.0.2"])], "'bad name' (a name of h1)"),
        ([machine("h_1", addresses=["10.0.0.2"])], "'h_1' (a name of h_1)"),
        ([machine("h1", addresses=["10.0.0.2\n1.2.3.4 x"])], "the address of h1"),
        (
            [machine("h1", "kvm", addresses=["10.0.0.2"]), machine("h2", "KVM", host="10.0.0.3")],
            "the name KVM is given to h1 and h2",
        ),
    ],
)
def test_invalid_values_never_reach_the_file(machines, message) -> None:
    with pytest.raises(AnsibleFilterError, match=r"^/etc/hosts: ") as info:
        filters.etc_hosts(machines)
    assert message in str(info.value)


# --- the tasks, for real -----------------------------------------------------------------------

PLAYBOOK = """\
- name: What the trust step registers on every machine
  hosts: all
  gather_facts: false
  tasks:
    - name: Learn the machine's SSH identity (recorded)
      ansible.builtin.set_fact:
        __one_frontend_ssh: "{{ recorded_ssh }}"
      when: recorded_ssh is defined

- name: The front-end's /etc/hosts
  hosts: frontend
  gather_facts: false
  tasks:
    - name: Write every machine's names into /etc/hosts
      ansible.builtin.include_role:
        name: kvmprep.kvm.one_frontend
        tasks_from: etc_hosts
"""


def inventory(**h1: Any) -> dict[str, Any]:
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    return {
        "all": {"vars": local},
        "frontend": {
            "hosts": {"fe": {"recorded_ssh": {"addresses": ["10.0.0.1", "fd00::1"]}}},
            "vars": {"one_frontend_manage_etc_hosts": True},
        },
        "kvm_hosts": {
            "hosts": {
                "h1": {"ansible_host": "10.0.0.2", "one_frontend_host_name": "one-h1", **h1},
                "h2": {"recorded_ssh": {"addresses": ["10.0.0.3"]}},
            }
        },
    }


def run(tmp_path: Path, hosts_file: Path, inv: dict[str, Any]) -> dict[str, Any]:
    """Run the playbook; the front-end's task results by name, and the run's return code."""
    playbook = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
    assert playbook is not None, "ansible-playbook is not installed (pip install .[test])"
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    (tmp_path / "inventory.json").write_text(json.dumps(inv))  # JSON is YAML
    (tmp_path / "vars.json").write_text(
        json.dumps({"__one_frontend_etc_hosts_path": str(hosts_file)})
    )
    env = ansible_env(tmp_path)
    proc = subprocess.run(
        [playbook, "-i", "inventory.json", "-e", "@vars.json", "play.yml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    try:
        output = json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"no JSON from ansible-playbook (rc={proc.returncode}): {proc.stderr}")
    tasks = {
        task["task"]["name"].split(" : ")[-1]: task["hosts"]["fe"]
        for task in output["plays"][1]["tasks"]
        if "fe" in task["hosts"]
    }
    return {"rc": proc.returncode, "tasks": tasks}


ORIGINAL = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n"
BLOCK = f"# BEGIN {MARKER}\n10.0.0.1 fe\n10.0.0.2 h1 one-h1\n10.0.0.3 h2\n# END {MARKER}\n"


@pytest.mark.ansible
def test_the_block_lists_every_machine_once_with_a_backup(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(ORIGINAL)
    first = run(tmp_path, hosts, inventory())
    assert first["rc"] == 0, first
    assert first["tasks"]["Write every machine's address and names into /etc/hosts"]["changed"]
    assert hosts.read_text() == ORIGINAL + BLOCK
    backups = [p for p in tmp_path.iterdir() if p.name.startswith("hosts.") and p.name != "hosts"]
    assert [b.read_text() for b in backups] == [ORIGINAL]
    # Idempotent.
    again = run(tmp_path, hosts, inventory())
    assert again["rc"] == 0
    assert not again["tasks"]["Write every machine's address and names into /etc/hosts"]["changed"]
    assert hosts.read_text() == ORIGINAL + BLOCK


@pytest.mark.ansible
def test_an_unknown_address_keeps_the_block_and_warns(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(ORIGINAL + BLOCK)
    # h1 has no IP ansible_host and this run learnt no address of it.
    got = run(tmp_path, hosts, inventory(ansible_host="h1.lan"))
    assert got["rc"] == 0, got
    assert got["tasks"]["Write every machine's address and names into /etc/hosts"].get("skipped")
    warned = got["tasks"]["Say that /etc/hosts was left as it is"]["warnings"]
    assert "no address of h1 in this run" in " ".join(warned)
    assert hosts.read_text() == ORIGINAL + BLOCK


@pytest.mark.ansible
def test_a_linked_etc_hosts_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text(ORIGINAL)
    hosts = tmp_path / "hosts"
    hosts.symlink_to(target)
    got = run(tmp_path, hosts, inventory())
    assert got["rc"] != 0
    refused = got["tasks"]["Refuse an /etc/hosts that is not a regular file"]
    assert refused["failed"]
    assert f"is a symbolic link to {target}" in refused["msg"]
    assert target.read_text() == ORIGINAL
    assert hosts.is_symlink()


@pytest.mark.ansible
def test_an_invalid_name_fails_before_the_file_changes(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(ORIGINAL)
    got = run(tmp_path, hosts, inventory(one_frontend_host_name="h1\n10.6.6.6 fe"))
    assert got["rc"] != 0
    failed = got["tasks"]["Write every machine's address and names into /etc/hosts"]
    assert failed["failed"]
    assert "is not a host name" in failed["msg"]
    assert hosts.read_text() == ORIGINAL
