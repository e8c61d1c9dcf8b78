"""one_frontend_ssh: which key oneadmin authenticates with, and how others reach the machine."""

from __future__ import annotations

from pathlib import Path

from tests.unit.test_kvm_host_conf import ROOT, load_library_module

ssh = load_library_module("one_frontend_ssh", library=ROOT / "plugins" / "modules")

IP_ADDR = """\
1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
1: lo    inet6 ::1/128 scope host noprefixroute \\       valid_lft forever preferred_lft forever
2: eth0    inet 10.89.0.5/24 brd 10.89.0.255 scope global eth0\\       valid_lft forever
2: eth0    inet6 fd00:89::5/64 scope global \\       valid_lft forever preferred_lft forever
2: eth0    inet6 fe80::1c4e:9aff:fe2b:1/64 scope link \\       valid_lft forever
3: eth1    inet 10.89.0.5/24 scope global secondary eth1
"""


def test_addresses_skip_loopback_link_local_and_repeats() -> None:
    found = ssh.interface_addresses(lambda argv: (0, IP_ADDR, ""))
    assert found == ["10.89.0.5", "fd00:89::5"]


def test_no_ip_command_means_no_addresses() -> None:
    assert ssh.interface_addresses(lambda argv: (127, "", "not found")) == []


def test_the_identity_is_the_first_default_file_with_both_halves(tmp_path: Path) -> None:
    assert ssh.existing_identity(str(tmp_path)) is None
    (tmp_path / "id_rsa").write_text("private")  # no .pub: ssh could use it, kvmprep cannot tell
    (tmp_path / "id_ed25519").write_text("private")
    (tmp_path / "id_ed25519.pub").write_text("ssh-ed25519 AAAAC3Nz oneadmin@one\n")
    assert ssh.existing_identity(str(tmp_path)) == str(tmp_path / "id_ed25519")
    (tmp_path / "id_rsa.pub").write_text("ssh-rsa AAAAB3Nz oneadmin@one\n")
    assert ssh.existing_identity(str(tmp_path)) == str(tmp_path / "id_rsa")


def test_key_lines_lose_their_comment(tmp_path: Path) -> None:
    key = tmp_path / "k.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 oneadmin@kvmprep-one\n")
    assert ssh.read_key_line(str(key)) == "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"
