"""The opennebula_hosts inventory plugin (plugins/inventory) against the oned test double.

Every test runs the real ``ansible-inventory --list`` (or ``kvmprep check``) in a subprocess,
with the environment kvmprep's runner gives ansible-playbook (the plugin's directory on
ANSIBLE_INVENTORY_PLUGINS and the plugin enabled), and the double serving oned's XML-RPC API
on loopback; the plugin talks to it with pyone over real HTTP.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyone
import pytest

from kvmprep import content, runner
from kvmprep.cli import main
from kvmprep.exitcodes import ExitStatus
from tests.one_double.oned_double import DISABLED, MONITORED, start
from tests.unit.ansible_env import ansible_env

PASSWORD = "Pw-5e81c0aa-never-shown"
WRONG = "Wrong-93d2f7-never-shown"
PLUGIN = "kvmprep.kvm.opennebula_hosts"


@pytest.fixture
def one() -> Iterator[Any]:
    """oned with kvm1 (cluster prod-1, template IP), kvm2 and kvm3 (DISABLED) in the default
    cluster, and lxc1, an LXC host, in the default cluster; all monitored."""
    with start(users={"oneadmin": PASSWORD}, interval=0.05) as double:
        client = pyone.OneServer(double.url, session=f"oneadmin:{PASSWORD}")
        prod = client.cluster.allocate("prod-1")
        kvm1 = client.host.allocate("kvm1", "kvm", "kvm", prod)
        client.host.update(kvm1, 'IP="192.0.2.11"', 1)
        client.host.allocate("kvm2", "kvm", "kvm", 0)
        kvm3 = client.host.allocate("kvm3", "kvm", "kvm", 0)
        client.host.allocate("lxc1", "lxc", "lxc", 0)
        for name in ("kvm1", "kvm2", "lxc1"):
            double.wait_for_state(name, MONITORED)
        client.host.status(kvm3, 1)  # disabled by an operator
        double.wait_for_state("kvm3", DISABLED)
        yield double


@pytest.fixture
def auth_file(tmp_path: Path) -> Path:
    path = tmp_path / "one_auth"
    path.write_text(f"oneadmin:{PASSWORD}\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    """What kvmprep's runner gives ansible-playbook, plus the unit tests' Ansible settings."""
    base = runner.ansible_environment(
        {k: v for k, v in os.environ.items() if k not in ("ONE_XMLRPC", "ONE_AUTH")},
        inventory_plugin_path=content.inventory_plugin_paths(),
        cwd=tmp_path,
    )
    env = {**ansible_env(tmp_path), **base, **extra}
    for key in ("ONE_XMLRPC", "ONE_AUTH"):
        if key not in extra:
            env.pop(key, None)
    return env


def write_config(tmp_path: Path, text: str, name: str = "opennebula_hosts.yml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def ansible_inventory(
    tmp_path: Path, source: Path, *args: str, **env: str
) -> tuple[dict[str, Any], str]:
    """(ansible-inventory --list's document, everything else it printed)."""
    command = shutil.which("ansible-inventory", path=str(Path(sys.executable).parent))
    assert command is not None, "ansible-inventory is not installed"
    proc = subprocess.run(
        [command, "-i", str(source), "--list", *args],
        cwd=tmp_path,
        env=environment(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return unwrap(json.loads(proc.stdout)), proc.stderr


def unwrap(value: Any) -> Any:
    """The values without ansible-inventory's {"__ansible_unsafe": ...} wrapping (what the plugin
    read from oned is never taken for a template)."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


def group(doc: dict[str, Any], name: str) -> set[str]:
    return set(doc.get(name, {}).get("hosts", []))


def listed(doc: dict[str, Any]) -> set[str]:
    return set(doc["_meta"]["hostvars"])


def from_env(one: Any, auth_file: Path) -> dict[str, str]:
    return {"ONE_XMLRPC": one.url, "ONE_AUTH": str(auth_file)}


# --- hosts, groups and variables ----------------------------------------------------------


def test_lists_every_host_with_groups_and_variables(tmp_path, one, auth_file):
    source = write_config(tmp_path, f"plugin: {PLUGIN}\n")
    doc, printed = ansible_inventory(tmp_path, source, **from_env(one, auth_file))
    assert listed(doc) == {"kvm1", "kvm2", "kvm3", "lxc1"}
    # LXC hosts stay out of the group kvmprep prepares and audits.
    assert group(doc, "kvm_hosts") == {"kvm1", "kvm2", "kvm3"}
    assert group(doc, "one_im_mad_kvm") == {"kvm1", "kvm2", "kvm3"}
    assert group(doc, "one_im_mad_lxc") == {"lxc1"}
    assert group(doc, "one_cluster_prod_1") == {"kvm1"}
    assert group(doc, "one_cluster_default") == {"kvm2", "kvm3", "lxc1"}
    ids = {h.id: h.name for h in one.hosts.values()}
    hostvars = doc["_meta"]["hostvars"]
    assert hostvars["kvm1"] == {
        "ansible_host": "kvm1",
        "one_frontend_host_name": "kvm1",
        "one_frontend_cluster": "prod-1",
        "one_host_id": next(i for i, n in ids.items() if n == "kvm1"),
        "one_host_state": "MONITORED",
        "one_host_im_mad": "kvm",
        "one_host_vm_mad": "kvm",
    }
    assert hostvars["kvm3"]["one_host_state"] == "DISABLED"
    assert hostvars["lxc1"]["one_host_vm_mad"] == "lxc"
    assert PASSWORD not in json.dumps(doc) + printed
    # The collection's name, not installed, was never looked up (the plugin is enabled first).
    assert "Error loading plugin" not in printed


def test_the_short_name_works_as_well_and_another_name_is_not_ours(tmp_path, one, auth_file):
    source = write_config(tmp_path, "plugin: opennebula_hosts\n")
    doc, _ = ansible_inventory(tmp_path, source, **from_env(one, auth_file))
    assert group(doc, "kvm_hosts") == {"kvm1", "kvm2", "kvm3"}
    other = write_config(
        tmp_path, "plugin: ansible.builtin.constructed\n", "x.opennebula_hosts.yml"
    )
    doc, _ = ansible_inventory(tmp_path, other, **from_env(one, auth_file))
    assert listed(doc) == set()


def test_ansible_host_from_a_template_attribute_else_the_name_with_a_warning(
    tmp_path, one, auth_file
):
    # Attribute names as oned keeps them (upper case), whatever case the option is given in.
    source = write_config(tmp_path, f"plugin: {PLUGIN}\nhost_address: ip\n")
    doc, printed = ansible_inventory(tmp_path, source, **from_env(one, auth_file))
    hostvars = doc["_meta"]["hostvars"]
    assert hostvars["kvm1"]["ansible_host"] == "192.0.2.11"
    assert hostvars["kvm2"]["ansible_host"] == "kvm2"
    assert "no ip attribute in the OpenNebula template of kvm2, kvm3, lxc1" in " ".join(
        printed.split()
    )


def test_options_in_the_file_beat_the_environment(tmp_path, one, auth_file):
    source = write_config(
        tmp_path,
        f"plugin: {PLUGIN}\nendpoint: {one.url}\nsession: oneadmin:{PASSWORD}\n",
    )
    # The environment names a dead endpoint and a missing file: neither is used.
    doc, _ = ansible_inventory(
        tmp_path,
        source,
        ONE_XMLRPC="http://127.0.0.1:1/RPC2",
        ONE_AUTH=str(tmp_path / "missing"),
    )
    assert group(doc, "kvm_hosts") == {"kvm1", "kvm2", "kvm3"}


# --- filters and constructed features -----------------------------------------------------


@pytest.mark.parametrize(
    ("filters", "wanted"),
    [
        ("clusters: [prod-1]", {"kvm1"}),
        ("clusters: ['100', default]", {"kvm1", "kvm2", "kvm3", "lxc1"}),  # 100: prod-1's id
        ("clusters: ['0']", {"kvm2", "kvm3", "lxc1"}),
        ("states: [monitored]", {"kvm1", "kvm2", "lxc1"}),
        ("states: [DISABLED, ERROR]", {"kvm3"}),
        ("im_mads: [lxc]", {"lxc1"}),
        ("im_mads: [kvm]\nstates: [MONITORED]\nclusters: [default]", {"kvm2"}),
    ],
)
def test_filters(tmp_path, one, auth_file, filters, wanted):
    source = write_config(tmp_path, f"plugin: {PLUGIN}\n{filters}\n")
    doc, _ = ansible_inventory(tmp_path, source, **from_env(one, auth_file))
    assert listed(doc) == wanted


def test_compose_groups_and_keyed_groups(tmp_path, one, auth_file):
    source = write_config(
        tmp_path,
        f"plugin: {PLUGIN}\n"
        "compose:\n"
        "  ansible_user: \"'admin'\"\n"
        "  one_name_upper: one_frontend_host_name | upper\n"
        "groups:\n"
        "  parked: one_host_state != 'MONITORED'\n"
        "keyed_groups:\n"
        "  - key: one_host_state | lower\n"
        "    prefix: state\n",
    )
    doc, _ = ansible_inventory(tmp_path, source, **from_env(one, auth_file))
    hostvars = doc["_meta"]["hostvars"]
    assert hostvars["kvm2"]["ansible_user"] == "admin"
    assert hostvars["kvm2"]["one_name_upper"] == "KVM2"
    assert group(doc, "parked") == {"kvm3"}
    assert group(doc, "state_disabled") == {"kvm3"}
    assert group(doc, "state_monitored") == {"kvm1", "kvm2", "lxc1"}


# --- cache ----------------------------------------------------------------------------------


def test_cached_hosts_answer_when_oned_is_gone(tmp_path, one, auth_file):
    cache_dir = tmp_path / "cache"
    source = write_config(
        tmp_path,
        f"plugin: {PLUGIN}\ncache: true\ncache_plugin: ansible.builtin.jsonfile\n"
        f"cache_connection: {cache_dir}\ncache_timeout: 600\n",
    )
    first, _ = ansible_inventory(tmp_path, source, **from_env(one, auth_file))
    assert group(first, "kvm_hosts") == {"kvm1", "kvm2", "kvm3"}
    cached = "".join(p.read_text() for p in cache_dir.iterdir())
    assert "kvm1" in cached
    assert PASSWORD not in cached
    one.stop()
    again, printed = ansible_inventory(tmp_path, source, **from_env(one, auth_file))
    assert again == first
    # Without the cache the stopped double is asked, and does not answer: the cache answered.
    flushed, printed = ansible_inventory(
        tmp_path, source, "--flush-cache", **from_env(one, auth_file)
    )
    assert listed(flushed) == set()
    assert "connection refused" in printed


def test_without_cache_every_run_asks_oned(tmp_path, one, auth_file):
    source = write_config(tmp_path, f"plugin: {PLUGIN}\n")
    ansible_inventory(tmp_path, source, **from_env(one, auth_file))
    one.stop()
    doc, printed = ansible_inventory(tmp_path, source, **from_env(one, auth_file))
    assert listed(doc) == set()
    assert "connection refused" in printed


# --- errors ---------------------------------------------------------------------------------


def one_line_error(printed: str) -> str:
    """The plugin's message, as ansible-inventory's warning shows it (white space joined)."""
    return " ".join(printed.split())


def test_authentication_failure_names_the_endpoint_not_the_password(tmp_path, one, auth_file):
    auth_file.write_text(f"oneadmin:{WRONG}\n", encoding="utf-8")
    # The short name: the auto plugin can load it (not the collection's, not installed here).
    source = write_config(tmp_path, "plugin: opennebula_hosts\n")
    doc, printed = ansible_inventory(tmp_path, source, **from_env(one, auth_file))
    assert listed(doc) == set()
    text = one_line_error(printed)
    assert f"OpenNebula at {one.url} (one.hostpool.info): authentication failed" in text
    # Asked once: the auto plugin, which loads this plugin again for the source it failed on,
    # gets the same answer without a second call (a timeout would otherwise be waited twice).
    assert [method for method, _ in one.calls].count("one.hostpool.info") == 1
    assert WRONG not in printed
    assert PASSWORD not in printed
    assert "Traceback" not in printed


def test_unreachable_endpoint_is_named_with_the_reason(tmp_path, auth_file):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    url = f"http://127.0.0.1:{port}/RPC2"
    source = write_config(tmp_path, f"plugin: {PLUGIN}\n")
    doc, printed = ansible_inventory(tmp_path, source, ONE_XMLRPC=url, ONE_AUTH=str(auth_file))
    assert listed(doc) == set()
    text = one_line_error(printed)
    assert f"OpenNebula at {url} (one.hostpool.info): connection refused" in text
    assert "Traceback" not in printed


@pytest.mark.parametrize(
    ("config", "env", "message"),
    [
        ("", {}, "no OpenNebula endpoint: set endpoint in the inventory file or ONE_XMLRPC"),
        (
            "endpoint: http://127.0.0.1:9/RPC2\n",
            {},
            "no OpenNebula credentials: set session",
        ),
        (
            "endpoint: one.example.org:2633\n",
            {},
            "endpoint is not an http(s) URL",
        ),
        (
            f"endpoint: http://oneadmin:{PASSWORD}@127.0.0.1:9/RPC2\n",
            {},
            "holds credentials: give them in session, not in the URL",
        ),
        (
            "endpoint: http://127.0.0.1:9/RPC2\nauth_file: /nonexistent/one_auth\n",
            {},
            "cannot read the credentials file /nonexistent/one_auth (ONE_AUTH or auth_file): "
            "No such file or directory",
        ),
        (
            f"endpoint: {{url}}\nsession: oneadmin:{PASSWORD}\nstates: [MONITORED, monitor]\n",
            {},
            "states: unknown MONITOR (OpenNebula's host states: INIT, MONITORING_MONITORED",
        ),
        (
            f"endpoint: http://127.0.0.1:9/RPC2\nsession: {PASSWORD}\n",
            {},
            "session must be USER:PASSWORD",
        ),
    ],
)
def test_settings_errors_are_one_line_without_secrets(tmp_path, one, config, env, message):
    source = write_config(tmp_path, f"plugin: {PLUGIN}\n{config.replace('{url}', one.url)}")
    doc, printed = ansible_inventory(tmp_path, source, **env)
    assert listed(doc) == set()
    assert message in one_line_error(printed)
    assert PASSWORD not in printed
    assert "Traceback" not in printed


# --- kvmprep's CLI --------------------------------------------------------------------------


@pytest.mark.ansible
def test_kvmprep_check_audits_the_hosts_the_plugin_lists(
    tmp_path, one, auth_file, monkeypatch, capsys
):
    # Every kvm host is sent to a closed port on loopback: the check cannot reach them, and
    # says so for each host the plugin listed (the LXC host is not audited).
    source = write_config(
        tmp_path,
        f"plugin: {PLUGIN}\n"
        "compose:\n"
        "  ansible_host: \"'127.0.0.1'\"\n"
        "  ansible_port: 1\n"
        "  ansible_timeout: 5\n",
    )
    monkeypatch.setenv("ONE_XMLRPC", one.url)
    monkeypatch.setenv("ONE_AUTH", str(auth_file))
    monkeypatch.chdir(tmp_path)
    status = main(["check", "-i", str(source), "--format", "json"])
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert set(doc["hosts"]) == {"kvm1", "kvm2", "kvm3"}, captured.err
    for name, host in doc["hosts"].items():
        assert host["error"].startswith("unreachable: "), (name, host["error"])
    assert status == ExitStatus.UNREACHABLE
    assert PASSWORD not in captured.out + captured.err


# --- the runner's environment -------------------------------------------------------------


def test_the_plugin_is_enabled_first_and_the_operators_choice_kept(tmp_path):
    ours = content.inventory_plugin_paths()
    assert (ours[0] / "opennebula_hosts.py").is_file()
    env = runner.ansible_environment({}, inventory_plugin_path=ours, cwd=tmp_path)
    assert env["ANSIBLE_INVENTORY_PLUGINS"] == str(ours[0])
    assert env["ANSIBLE_INVENTORY_ENABLED"] == (
        "opennebula_hosts,host_list,script,auto,yaml,ini,toml"
    )
    env = runner.ansible_environment(
        {"ANSIBLE_INVENTORY_ENABLED": "yaml, community.general.proxmox"},
        inventory_plugin_path=ours,
        cwd=tmp_path,
    )
    assert env["ANSIBLE_INVENTORY_ENABLED"] == "opennebula_hosts,yaml,community.general.proxmox"
    (tmp_path / "ansible.cfg").write_text(
        "[defaults]\ninventory_plugins = my/inventory\n"
        "[inventory]\nenable_plugins = ini, opennebula_hosts\n"
    )
    env = runner.ansible_environment({}, inventory_plugin_path=ours, cwd=tmp_path)
    assert env["ANSIBLE_INVENTORY_ENABLED"] == "opennebula_hosts,ini"
    assert env["ANSIBLE_INVENTORY_PLUGINS"].split(os.pathsep) == [
        str(ours[0]),
        str(tmp_path / "my" / "inventory"),
    ]
    assert "ANSIBLE_INVENTORY_ENABLED" not in runner.ansible_environment({}, cwd=tmp_path)
