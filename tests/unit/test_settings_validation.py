"""Every inventory value that reaches a privileged file is judged before the first change
(issue 16, findings 8, 9, 12, 13, 14): the pure functions of module_utils/kvm_host_settings.py,
the controller-side action plugin that runs them, and the first play of apply.yml, audit.yml and
check.yml that stops the run there, naming the variable."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.ansible_env import ansible_env, run_module_locally
from tests.unit.test_kvm_host_conf import ROOT, load_library_module

settings = load_library_module("kvm_host_settings", ROOT / "plugins/module_utils")

ROLES = ("kvm_host", "one_frontend")
ACTION_PLUGINS = str(ROOT / "plugins" / "action")
INVENTORY = ROOT / "tests" / "unit" / "fixtures" / "inventory_local.ini"


def specs(*roles: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for role in roles or ROLES:
        path = ROOT / "roles" / role / "meta" / "argument_specs.yml"
        out.update(yaml.safe_load(path.read_text())["argument_specs"]["main"]["options"])
    return out


def defaults(**overrides: Any) -> dict[str, Any]:
    values = {name: option["default"] for name, option in specs().items()}
    values["kvm_host_libvirt_sasl_password"] = "s3cret"
    values.update(overrides)
    return values


def problems(**overrides: Any) -> list[str]:
    return settings.validate(defaults(**overrides), specs())


def test_the_defaults_pass() -> None:
    assert problems() == []


HOSTILE = [
    # Finding 8: names that give every user (sudoers ALL) or root the drivers' rights.
    ("kvm_host_oneadmin_user", "ALL"),
    ("kvm_host_oneadmin_user", "all"),
    ("kvm_host_oneadmin_user", "root"),
    ("kvm_host_oneadmin_user", "one admin"),
    ("kvm_host_oneadmin_user", "x\ny"),
    ("kvm_host_oneadmin_user", "Oneadmin"),
    ("kvm_host_oneadmin_user", "a" * 33),
    ("kvm_host_oneadmin_user", ""),
    ("kvm_host_oneadmin_group", "root"),
    ("kvm_host_kvm_device_group", "root"),
    ("kvm_host_kvm_device_group", 'kvm", MODE="0666'),
    ("kvm_host_libvirt_group", "ALL"),
    ("one_frontend_oneadmin_user", "root"),
    ("one_frontend_oneadmin_group", "ALL"),
    ("kvm_host_libvirt_sasl_username", "a:b"),
    # uids and gids.
    ("kvm_host_oneadmin_uid", -1),
    ("kvm_host_oneadmin_uid", 0),
    ("kvm_host_oneadmin_uid", "0"),
    ("kvm_host_oneadmin_uid", True),
    ("kvm_host_oneadmin_uid", 2**31),
    ("kvm_host_oneadmin_uid", 2**31 - 1),
    ("kvm_host_oneadmin_uid", "many"),
    ("kvm_host_oneadmin_uid", 9869.5),
    ("kvm_host_oneadmin_gid", float("inf")),
    ("kvm_host_oneadmin_gid", None),
    # Paths.
    ("kvm_host_remotes_dir", "/"),
    ("kvm_host_remotes_dir", "relative/one"),
    ("kvm_host_remotes_dir", "/var/tmp/../../etc"),
    ("kvm_host_remotes_dir", "/var/tmp//one"),
    ("kvm_host_remotes_dir", "/var/tmp/one/"),
    ("kvm_host_remotes_dir", "/etc"),
    ("kvm_host_remotes_dir", "/etc/one"),
    ("kvm_host_remotes_dir", "/var/tmp"),
    ("kvm_host_remotes_dir", "/usr/lib/one"),
    ("kvm_host_remotes_dir", "/proc/x"),
    ("kvm_host_remotes_dir", "/var/tmp/o ne"),
    ("kvm_host_oneadmin_home", "/root"),
    ("kvm_host_oneadmin_home", "/home"),
    ("kvm_host_oneadmin_home", "/sys/kernel"),
    ("kvm_host_oneadmin_home", ["/var/lib/one"]),
    ("kvm_host_oneadmin_home", {"a": 1}),
    ("kvm_host_apparmor_datastore_path", "/"),
    ("kvm_host_emulator_link", "/dev/null"),
    ("kvm_host_emulator_link", "/usr/bin"),
    ("kvm_host_emulator_link", "/etc/shadow"),
    ("one_frontend_remotes_dir", "/"),
    ("one_frontend_remotes_dir", "/var/lib"),
    ("one_frontend_remote_dir", "/tmp"),
    ("one_frontend_oneadmin_home", "/etc"),
    ("one_frontend_etc_dir", "/etc"),
    # Finding 12: a host name that starts a line of its own in known_hosts.
    ("one_frontend_host_name", "kvm1\n@cert-authority * ssh-ed25519 AAAA"),
    ("one_frontend_host_name", "kvm1 kvm2"),
    ("one_frontend_host_name", "*"),
    ("one_frontend_host_name", "kvm1,evil"),
    ("one_frontend_host_name", ["kvm1"]),
    # SASL mechanisms without a security layer over plain TCP.
    ("kvm_host_libvirt_sasl_mech", "plain"),
    ("kvm_host_libvirt_sasl_mech", "PLAIN"),
    ("kvm_host_libvirt_sasl_mech", "login"),
    ("kvm_host_libvirt_sasl_mech", "anonymous"),
    ("kvm_host_libvirt_sasl_mech", "external"),
    ("kvm_host_libvirt_sasl_mech", "scram-sha-256"),
    ("kvm_host_libvirt_sasl_mech", "digest-md5 plain"),
    # Finding 13: the listener's address and the TLS clients.
    ("kvm_host_libvirt_listen_addr", "kvm1.example.org"),
    ("kvm_host_libvirt_listen_addr", "0.0.0.0 1.2.3.4"),
    ("kvm_host_libvirt_listen_addr", ["10.0.0.1"]),
    ("kvm_host_libvirt_tls_allowed_dn_list", "CN=kvm1"),
    ("kvm_host_libvirt_tls_allowed_dn_list", [{"CN": "kvm1"}]),
    ("kvm_host_libvirt_tls_allowed_dn_list", ['CN=a", "CN=*']),
    ("kvm_host_libvirt_tls_allowed_dn_list", ["CN=a\nlisten_tcp = 1"]),
    ("kvm_host_libvirt_tls_allowed_dn_list", [""]),
    # Issue 17: a mode check would never agree with.
    ("kvm_host_kvm_device_mode", "660"),
    ("kvm_host_kvm_device_mode", "4660"),
    ("kvm_host_kvm_device_mode", "0666,"),
    ("kvm_host_kvm_device_mode", "rw-rw----"),
    ("kvm_host_kvm_device_mode", 660),
    # Finding 9: the wrong type, refused with the variable named (not turned into text).
    ("kvm_host_one_version", {"a": 1}),
    ("kvm_host_one_repo_url", ["http://x"]),
    ("kvm_host_packages", "libvirt-daemon"),
    ("kvm_host_packages", [{"name": "x"}]),
    ("kvm_host_allow_emulation", "maybe"),
    ("kvm_host_qemu_conf_extra", ["user"]),
    ("kvm_host_qemu_conf_extra", {'user = "root"\nx': 1}),
    ("kvm_host_qemu_conf_extra", {"vnc_listen": "0.0.0.0\nuser = root"}),
    ("kvm_host_migration_transport", "udp"),
    ("kvm_host_migration_transport", ["tcp"]),
    ("one_frontend_auth", {"user": "oneadmin"}),
    ("one_frontend_wait_monitored", float("inf")),
    ("one_frontend_wait_monitored", -1),
    ("one_frontend_kvmrc", {"QEMU_PROTOCOL": "qemu+tcp\nrm -rf /"}),
    ("one_frontend_kvmrc", {"A B": "x"}),
    ("one_frontend_cluster", "default\nx"),
    ("one_frontend_oned_service", "opennebula; reboot"),
    ("kvm_host_one_node_package", "opennebula-node-kvm --allow-downgrades"),
]


@pytest.mark.parametrize(("name", "value"), HOSTILE)
def test_a_hostile_value_is_refused_on_one_line_naming_the_variable(name: str, value: Any) -> None:
    found = problems(**{name: value})
    assert len(found) == 1, found
    assert found[0].startswith(f"{name}: value ")
    assert "\n" not in found[0]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("kvm_host_oneadmin_user", "one-admin_2"),
        ("kvm_host_oneadmin_uid", "9869"),
        ("kvm_host_oneadmin_uid", 1),
        ("kvm_host_oneadmin_uid", 2**31 - 2),
        ("kvm_host_oneadmin_home", "/srv/one"),
        ("kvm_host_remotes_dir", "/var/tmp/one-remotes"),
        ("kvm_host_emulator_link", "/usr/local/bin/qemu-kvm-one"),
        ("kvm_host_libvirt_group", ""),
        ("kvm_host_libvirt_sasl_mech", "GSSAPI"),
        ("kvm_host_libvirt_listen_addr", "192.0.2.10"),
        ("kvm_host_libvirt_listen_addr", "2001:db8::10"),
        ("kvm_host_libvirt_tls_allowed_dn_list", ["C=GB,O=Example,CN=*.hosts.example.org"]),
        ("kvm_host_allow_emulation", "yes"),
        ("one_frontend_host_name", "kvm1.example.org"),
        ("one_frontend_host_name", "2001:db8::10"),
        ("one_frontend_remote_dir", ""),
        ("one_frontend_wait_monitored", "0"),
        ("kvm_host_qemu_conf_extra", {"max_files": 32768, "cgroup_controllers": ["cpu"]}),
        ("one_frontend_vmm_defaults", {"OS": {"ARCH": "x86_64"}, "EMULATOR": "/usr/bin/x"}),
    ],
)
def test_a_good_value_passes(name: str, value: Any) -> None:
    assert problems(**{name: value}) == []


@pytest.mark.parametrize(
    "name",
    [
        "kvm_host_libvirt_sasl_password",
        "kvm_host_one_repo_password",
        "kvm_host_libvirt_tls_server_key",
        "one_frontend_auth",
    ],
)
def test_a_secret_is_never_shown(name: str) -> None:
    value = {"password": "hunter2-secret"}
    found = problems(**{name: value})
    assert found == [f"{name}: value hidden: must be a string (got dict)"]


def test_a_secret_with_a_line_break_is_refused_without_showing_it() -> None:
    found = problems(kvm_host_libvirt_sasl_password="pw\n[auth-libvirt-default]")
    assert len(found) == 1
    assert found[0].startswith("kvm_host_libvirt_sasl_password: value hidden: ")
    assert "pw" not in found[0].split(": ", 2)[2]


def test_pem_text_may_span_lines() -> None:
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    assert problems(kvm_host_libvirt_tls_ca_cert=pem) == []


def test_what_apply_needs_together_is_judged_for_apply_only() -> None:
    values = defaults(kvm_host_libvirt_sasl_password="")
    assert settings.validate(values, specs(), apply=False) == []
    (found,) = settings.validate(values, specs())
    assert found.startswith("kvm_host_libvirt_sasl_password: value hidden: is empty")
    tls = defaults(kvm_host_migration_transport="tls")
    (found,) = settings.validate(tls, specs())
    assert "kvm_host_migration_transport tls needs" in found
    open_tcp = defaults(kvm_host_libvirt_tcp_auth="none")
    (found,) = settings.validate(open_tcp, specs())
    assert "kvm_host_libvirt_tcp_allow_unauthenticated" in found
    assert (
        settings.validate(
            {**open_tcp, "kvm_host_libvirt_tcp_allow_unauthenticated": "true"}, specs()
        )
        == []
    )


def test_tls_without_a_dn_list_warns() -> None:
    assert settings.warnings(defaults()) == []
    (warning,) = settings.warnings(defaults(kvm_host_migration_transport="tls"))
    assert "kvm_host_libvirt_tls_allowed_dn_list" in warning
    narrowed = defaults(
        kvm_host_migration_transport="tls", kvm_host_libvirt_tls_allowed_dn_list=["CN=kvm1"]
    )
    assert settings.warnings(narrowed) == []


def test_host_name_problem_is_there_for_the_names_hosts_report() -> None:
    assert settings.host_name_problem("kvm1.example.org") is None
    assert settings.host_name_problem("kvm1\n@cert-authority *") is not None


def test_every_rule_is_for_a_documented_variable() -> None:
    assert set(specs()) >= settings.VALIDATED
    assert set(specs()) >= settings.MULTILINE


def test_the_readme_lists_every_validated_variable() -> None:
    text = (ROOT / "README.md").read_text()
    table = text.split("<!-- validated:start -->")[1].split("<!-- validated:end -->")[0]
    listed = set(re.findall(r"`((?:kvm_host|one_frontend)_[a-z0-9_]+)`", table))
    assert listed >= settings.VALIDATED, sorted(settings.VALIDATED - listed)


# --- The action plugin and the playbooks, through Ansible ----------------------------------


@pytest.mark.ansible
def test_the_action_plugin_fails_with_one_line_per_problem(tmp_path: Path) -> None:
    result = run_module_locally(
        tmp_path,
        "kvm_host_settings",
        {"roles": ["kvm_host"]},
        "-e",
        json.dumps({"kvm_host_oneadmin_user": "ALL", "kvm_host_oneadmin_home": {"a": 1}}),
        ANSIBLE_ACTION_PLUGINS=ACTION_PLUGINS,
    )
    assert result["failed"] is True
    assert result["kvmprep_invalid_settings"] == [
        "kvm_host_oneadmin_home: value {'a': 1}: must be a string (got dict)",
        "kvm_host_oneadmin_user: value 'ALL': 'ALL' is not allowed as this user name: it"
        " would give every user or root's rights",
    ]
    assert result["msg"] == "; ".join(result["kvmprep_invalid_settings"])


@pytest.mark.ansible
def test_the_action_plugin_passes_the_defaults_and_warns_on_tls(tmp_path: Path) -> None:
    result = run_module_locally(
        tmp_path,
        "kvm_host_settings",
        {"roles": ["kvm_host", "one_frontend"]},
        "-e",
        "kvm_host_migration_transport=tls",
        ANSIBLE_ACTION_PLUGINS=ACTION_PLUGINS,
    )
    # apply needs the certificates; check does not.
    assert result["failed"] is True
    check = run_module_locally(
        tmp_path,
        "kvm_host_settings",
        {"roles": ["kvm_host", "one_frontend"], "apply": False},
        "-e",
        "kvm_host_migration_transport=tls",
        ANSIBLE_ACTION_PLUGINS=ACTION_PLUGINS,
    )
    assert not check.get("failed"), check
    assert any("tls_allowed_dn_list" in warning for warning in check["warnings"])


def _playbook(
    tmp_path: Path, playbook: str, *extra: str, inventory: Path = INVENTORY, check: bool = True
) -> dict[str, Any]:
    binary = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
    assert binary is not None
    cmd = [binary, "-i", str(inventory), str(ROOT / "playbooks" / playbook)]
    cmd += ["--check"] if check else []
    for item in extra:
        cmd += ["-e", item]
    # Only the collection on its path: the play finds kvmprep.kvm.kvm_host_settings and the
    # roles by FQCN, as a plain ansible-playbook or AWX run does.
    env = ansible_env(tmp_path)
    proc = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode != 0, proc.stdout
    return json.loads(proc.stdout[proc.stdout.index("{") :])


@pytest.mark.ansible
@pytest.mark.parametrize("playbook", ["apply.yml", "audit.yml", "check.yml"])
def test_a_bad_value_stops_the_run_in_its_first_play(tmp_path: Path, playbook: str) -> None:
    output = _playbook(
        tmp_path, playbook, "kvm_host_oneadmin_uid=-1", "kvm_host_oneadmin_user=root"
    )
    ran = [
        (play["play"]["name"], task["task"]["name"])
        for play in output["plays"]
        for task in play["tasks"]
    ]
    # One task ran: the check of the settings; nothing after it, on no host.
    assert len(ran) == 1, ran
    first = output["plays"][0]["tasks"][0]["hosts"]["localhost"]
    assert first["failed"] is True
    assert first["kvmprep_invalid_settings"] == [
        "kvm_host_oneadmin_uid: value '-1': must be between 1 and 2147483646 (0 is root's)",
        "kvm_host_oneadmin_user: value 'root': 'root' is not allowed as this user name: it"
        " would give every user or root's rights",
    ]


@pytest.mark.ansible
def test_a_problem_of_some_hosts_names_them(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(
        "[kvm_hosts]\nkvm1\nkvm2 kvm_host_oneadmin_user=root\nkvm3 kvm_host_oneadmin_user=root\n"
        "[frontend]\nfe1 one_frontend_host_name='fe1 evil'\n"
        "[all:vars]\nansible_connection=local\nkvm_host_libvirt_sasl_password=x\n"
    )
    output = _playbook(tmp_path, "apply.yml", inventory=inventory)
    tasks = [task for play in output["plays"] for task in play["tasks"]]
    assert len(tasks) == 1
    (result,) = tasks[0]["hosts"].values()
    assert result["kvmprep_invalid_settings"] == [
        "kvm_host_oneadmin_user: value 'root': 'root' is not allowed as this user name: it"
        " would give every user or root's rights (on kvm2, kvm3)",
        "one_frontend_host_name: value 'fe1 evil': must not contain whitespace or control"
        " characters (on fe1)",
    ]


@pytest.mark.ansible
def test_apply_checks_mode_reports_oneadmin_pending_while_its_group_is_missing(
    tmp_path: Path,
) -> None:
    # Finding 14: an existing user, a kvm group the run would create. The user module cannot
    # be asked about a group that does not exist ("Group kvm does not exist").
    if (
        shutil.which("getent") is None
        or subprocess.run(
            ["getent", "passwd", "daemon"], capture_output=True, check=False
        ).returncode
    ):
        pytest.skip("no daemon user here")
    playbook = tmp_path / "pb.yml"
    play = {
        "name": "oneadmin in check mode",
        "hosts": "localhost",
        "gather_facts": False,
        "tasks": [
            {
                "name": "The role's account tasks",
                "ansible.builtin.include_role": {
                    "name": "kvmprep.kvm.kvm_host",
                    "tasks_from": "oneadmin",
                },
                "vars": {
                    "kvm_host_kvm_device_group": "kvmprepnogroup",
                    "kvm_host_oneadmin_user": "daemon",
                    "kvm_host_oneadmin_group": "daemon",
                    "kvm_host_oneadmin_uid": 1,
                    "kvm_host_oneadmin_gid": 1,
                    "kvm_host_oneadmin_home": "/usr/sbin",
                    "__kvm_host_libvirt_group": "daemon",
                    "__kvm_host_packages": [],
                    "__kvm_host_emulator": "/usr/bin/qemu-system-x86_64",
                    "__kvm_host_defaults_file": "/etc/default/libvirtd",
                    "__kvm_host_defaults_key": "LIBVIRTD_ARGS",
                    "__kvm_host_probe": {
                        "probe": {
                            "accounts": {
                                "user": {
                                    "uid": 1,
                                    "primary_group": "daemon",
                                    "home": "/usr/sbin",
                                    "shell": "/usr/sbin/nologin",
                                },
                                "home": {"exists": True},
                                "user_groups": ["daemon"],
                                "groups": {"kvmprepnogroup": None, "daemon": {"gid": 1}},
                            }
                        }
                    },
                },
            }
        ],
    }
    # The plan the role makes after its probe (tasks/plan.yml) comes first, as in apply.
    task = play["tasks"][0]
    play["vars"] = task.pop("vars")
    play["tasks"].insert(
        0,
        {
            "name": "The role's plan",
            "ansible.builtin.include_role": {
                "name": "kvmprep.kvm.kvm_host",
                "tasks_from": "plan",
                "public": True,
            },
        },
    )
    playbook.write_text(yaml.safe_dump([play]))
    binary = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
    assert binary is not None
    interpreter = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    python = f"ansible_python_interpreter={interpreter}"
    proc = subprocess.run(
        [binary, "-i", "localhost,", "-c", "local", "--check", str(playbook), "-e", python],
        cwd=tmp_path,
        env=ansible_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout
    output = json.loads(proc.stdout[proc.stdout.index("{") :])
    results = {
        task["task"]["name"].split(" : ")[-1]: task["hosts"]["localhost"]
        for task in output["plays"][0]["tasks"]
    }
    pending = results["Report oneadmin as pending until its groups exist"]
    assert pending["changed"] is True
    assert "kvmprepnogroup" in pending["msg"]


@pytest.mark.ansible
@pytest.mark.parametrize(
    ("addr", "transport", "stream"),
    [
        ("", "tcp", "16509"),
        ("192.0.2.10", "tcp", "192.0.2.10:16509"),
        ("2001:db8::1", "tls", "[2001:db8::1]:16514"),
    ],
)
def test_the_socket_drop_in_binds_the_address(
    tmp_path: Path, addr: str, transport: str, stream: str
) -> None:
    extra = {"kvm_host_libvirt_listen_addr": addr, "kvm_host_migration_transport": transport}
    assert str(_role_vars(tmp_path, "__kvm_host_listen_stream", extra)) == stream


def _role_vars(tmp_path: Path, name: str, extra: dict[str, Any]) -> Any:
    role = ROOT / "roles" / "kvm_host"
    values = {
        **yaml.safe_load((role / "defaults" / "main.yml").read_text()),
        **yaml.safe_load((role / "vars" / "main.yml").read_text()),
        **extra,
    }
    (tmp_path / "vars.json").write_text(json.dumps(values))
    result = run_module_locally(
        tmp_path, "ansible.builtin.debug", {"var": name}, "-e", f"@{tmp_path / 'vars.json'}"
    )
    return result[name]
