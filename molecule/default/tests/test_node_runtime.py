"""The OpenNebula node runtime on the converged lab hosts (roles/kvm_host/tasks/node_runtime.yml):
what the front-end's remotes run as oneadmin must be there, the way a real front-end needs it."""

from __future__ import annotations

SUDO_RULES = (
    "/usr/sbin/iptables",
    "/usr/sbin/ebtables",
    "/usr/sbin/ip link *",
    "/usr/bin/ovs-vsctl",
    "/usr/sbin/lvcreate",
)


def as_oneadmin(host, command: str):
    return host.run("runuser -u oneadmin -- sh -c %s", f"cd /tmp && {command}")


def test_ruby_probes_load_sqlite3_and_load_opennebula_paths(host):
    result = as_oneadmin(
        host, "ruby -e \"require 'sqlite3'; require 'load_opennebula_paths'; puts :ok\""
    )
    assert result.rc == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_lspci_runs_for_the_pci_probe(host):
    result = as_oneadmin(host, "lspci >/dev/null")
    assert result.rc == 0, result.stderr


def test_xmllint_runs_for_the_deploy_script(host):
    result = as_oneadmin(host, "xmllint --version")
    assert result.rc == 0, result.stderr


def test_emulator_link_resolves_to_the_distribution_qemu(host):
    target = host.check_output("readlink -f /usr/bin/qemu-kvm-one")
    assert target == "/usr/bin/qemu-system-x86_64"
    assert host.file(target).is_file


def test_oneadmin_may_run_the_drivers_commands_with_sudo(host):
    result = as_oneadmin(host, "sudo -n -l")
    assert result.rc == 0, result.stderr
    assert "NOPASSWD" in result.stdout
    for rule in SUDO_RULES:
        assert rule in result.stdout, rule
    assert as_oneadmin(host, "sudo -n ip link show lo").rc == 0


def test_sudoers_file_is_root_only_and_valid(host):
    sudoers = host.file("/etc/sudoers.d/kvmprep-oneadmin")
    assert sudoers.user == "root"
    assert sudoers.mode == 0o440
    assert host.run("visudo -cf /etc/sudoers.d/kvmprep-oneadmin").rc == 0


def test_remotes_and_datastores_dirs_belong_to_oneadmin(host):
    assert host.check_output("stat -c %U /var/tmp/one") == "oneadmin"
    assert host.file("/var/tmp/one").mode == 0o755
    assert host.file("/var/lib/one/datastores").user == "oneadmin"
