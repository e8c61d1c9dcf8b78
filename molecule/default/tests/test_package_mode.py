"""Package mode (kvm_host_one_node_install: package) against a local OpenNebula repository made
by this test: an opennebula-node-kvm TEST DOUBLE built here with the dependencies that matter and
a postinst that edits libvirt's configuration the way OpenNebula's does, in a signed apt
repository laid out like downloads.opennebula.io, served from one lab host on the lab network
and installed on the other by `kvmprep apply`. Runs last: the host keeps the package."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import pytest
import testinfra

SERVER, TARGET = "kvmprep-deb12", "kvmprep-deb13"
PORT = 8088
BASE = f"http://{SERVER}:{PORT}"
VERSION = "7.0"
PASSWORD = "kvmprep-repo-" + hashlib.sha256(os.urandom(16)).hexdigest()[:16]

POSTINST = """#!/bin/sh
# TEST DOUBLE of opennebula-node-kvm's postinst: what OpenNebula's does to libvirt (with augtool
# there): timestamped backups, then qemu.conf user/group/dynamic_ownership and the libvirtd.conf
# socket settings, the qemu-kvm-one link, and a libvirt restart.
set -e
[ "$1" = configure ] || exit 0
stamp=$(date +%Y-%m-%d_%H:%M:%S)
set_key() {  # file key value
    sed -i -E "/^[[:space:]]*$2[[:space:]]*=/d" "$1"
    printf '%s = %s\\n' "$2" "$3" >> "$1"
}
if [ -e /etc/libvirt/qemu.conf ]; then
    cp -f /etc/libvirt/qemu.conf "/etc/libvirt/qemu.conf.$stamp"
    set_key /etc/libvirt/qemu.conf user '"oneadmin"'
    set_key /etc/libvirt/qemu.conf group '"oneadmin"'
    set_key /etc/libvirt/qemu.conf dynamic_ownership 0
fi
if [ -e /etc/libvirt/libvirtd.conf ]; then
    cp -f /etc/libvirt/libvirtd.conf "/etc/libvirt/libvirtd.conf.$stamp"
    set_key /etc/libvirt/libvirtd.conf auth_unix_ro '"none"'
    set_key /etc/libvirt/libvirtd.conf auth_unix_rw '"none"'
    set_key /etc/libvirt/libvirtd.conf unix_sock_group '"oneadmin"'
    set_key /etc/libvirt/libvirtd.conf unix_sock_ro_perms '"0770"'
    set_key /etc/libvirt/libvirtd.conf unix_sock_rw_perms '"0770"'
fi
ln -sf /usr/bin/qemu-system-x86_64 /usr/bin/qemu-kvm-one
systemctl try-restart libvirtd.service >/dev/null 2>&1 || true
"""

SUDOERS = """# TEST DOUBLE of opennebula-node-kvm's sudoers rules (a subset).
Defaults:oneadmin !requiretty
Cmnd_Alias ONE_NET = /usr/sbin/ebtables, /usr/sbin/iptables, /usr/sbin/ipset
oneadmin ALL=(ALL) NOPASSWD: ONE_NET
"""

LOAD_PATHS = """# TEST DOUBLE of the load_opennebula_paths of OpenNebula's node packages.
ONE_LOCATION = ENV['ONE_LOCATION'] unless defined?(ONE_LOCATION)
KVMPREP_TEST_PACKAGE = true
"""


def lab_host(name: str):
    return testinfra.get_host(f"podman://{name}")


def build_package(root: Path) -> Path:
    tree = root / "pkg"
    for path, text, mode in (
        ("DEBIAN/postinst", POSTINST, 0o755),
        ("DEBIAN/conffiles", "/etc/sudoers.d/opennebula-node-kvm\n", 0o644),
        ("etc/sudoers.d/opennebula-node-kvm", SUDOERS, 0o440),
        ("usr/lib/ruby/vendor_ruby/load_opennebula_paths.rb", LOAD_PATHS, 0o644),
    ):
        file = tree / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text)
        file.chmod(mode)
    (tree / "DEBIAN/control").write_text(
        "Package: opennebula-node-kvm\n"
        "Version: 7.0.0-1\n"
        "Architecture: all\n"
        "Maintainer: kvmprep tests <root@localhost>\n"
        # What the real package depends on that matters on a host: libvirt and the runtime.
        "Depends: libvirt-daemon-system, libvirt-clients, ruby, ruby-sqlite3, pciutils, rsync, "
        "libxml2-utils, sudo\n"
        "Description: TEST DOUBLE of OpenNebula's KVM node package (kvmprep tests)\n"
    )
    deb = root / "opennebula-node-kvm_7.0.0-1_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)],
        check=True,
        capture_output=True,
    )
    return deb


def gpg(home: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            "gpg",
            "--homedir",
            home,
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            *args,
        ],
        check=True,
        capture_output=True,
        **kwargs,
    )


def signing_key(home: str, name: str) -> bytes:
    gpg(home, "--quick-gen-key", name, "rsa3072", "sign", "2d")
    return gpg(home, "--armor", "--export", name).stdout


def build_repository(root: Path, deb: Path, gnupg: str) -> Path:
    """BASE/7.0/Debian/13 like OpenNebula's: dists/stable/opennebula, signed InRelease."""
    repo = root / "repo"
    tree = repo / VERSION / "Debian" / "13"
    pool = tree / "pool" / "opennebula"
    pool.mkdir(parents=True)
    shutil.copy(deb, pool / deb.name)
    data = deb.read_bytes()
    fields = subprocess.run(
        ["dpkg-deb", "--field", str(deb)], check=True, capture_output=True, text=True
    ).stdout
    packages = (
        fields.rstrip("\n")
        + f"\nFilename: pool/opennebula/{deb.name}\nSize: {len(data)}\n"
        + f"SHA256: {hashlib.sha256(data).hexdigest()}\n\n"
    ).encode()
    index = tree / "dists" / "stable" / "opennebula" / "binary-amd64" / "Packages"
    index.parent.mkdir(parents=True)
    index.write_bytes(packages)
    release = (
        "Origin: kvmprep tests\nSuite: stable\nCodename: stable\n"
        f"Date: {formatdate(usegmt=True)}\nArchitectures: amd64\nComponents: opennebula\n"
        "SHA256:\n"
        f" {hashlib.sha256(packages).hexdigest()} {len(packages)}"
        " opennebula/binary-amd64/Packages\n"
    )
    dists = tree / "dists" / "stable"
    (dists / "Release").write_text(release)
    gpg(
        gnupg,
        "--local-user",
        "kvmprep test repository",
        "--clearsign",
        "--output",
        str(dists / "InRelease"),
        str(dists / "Release"),
    )
    return repo


@pytest.fixture(scope="module")
def repository() -> Iterator[str]:
    # A short GNUPGHOME: gpg-agent's socket path has a length limit.
    gnupg = tempfile.mkdtemp(prefix="kg", dir="/tmp")
    root = Path(tempfile.mkdtemp(prefix="kvmprep-repo-"))
    try:
        (root / "key").write_bytes(signing_key(gnupg, "kvmprep test repository"))
        repo = build_repository(root, build_package(root), gnupg)
        shutil.copy(root / "key", repo / "repo.key")
        # A key that signs nothing here: the repository must be refused with it.
        (repo / "other.key").write_bytes(signing_key(gnupg, "kvmprep other key"))
        server = lab_host(SERVER)
        server.run("rm -rf /srv/kvmprep-test-repo")
        subprocess.run(["podman", "cp", str(repo), f"{SERVER}:/srv/kvmprep-test-repo"], check=True)
        started = server.run(
            f"systemd-run --unit kvmprep-test-repo --collect python3 -m http.server {PORT} "
            "--directory /srv/kvmprep-test-repo"
        )
        assert started.rc == 0, started.stderr
        target = lab_host(TARGET)
        for _ in range(50):
            if (
                target.run(
                    f"python3 -c 'import urllib.request as u; u.urlopen(\"{BASE}/repo.key\")'"
                ).rc
                == 0
            ):
                break
            time.sleep(0.2)
        yield BASE
    finally:
        lab_host(SERVER).run("systemctl stop kvmprep-test-repo")
        subprocess.run(["gpgconf", "--homedir", gnupg, "--kill", "all"], check=False)
        shutil.rmtree(gnupg, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


def apply_package_mode(tmp: Path, key: str = "repo.key") -> subprocess.CompletedProcess[str]:
    extra = tmp / "package-mode.yml"
    extra.write_text(
        "kvm_host_one_node_install: package\n"
        f"kvm_host_one_repo_base: {BASE}\n"
        f"kvm_host_one_repo_key_url: {BASE}/{key}\n"
        "kvm_host_one_repo_username: lab\n"
        f"kvm_host_one_repo_password: {PASSWORD}\n"
    )
    command = [
        str(Path(sys.executable).with_name("kvmprep")),
        "apply",
        "-i",
        os.environ["MOLECULE_INVENTORY_FILE"],
        "-l",
        TARGET,
        "-e",
        f"@{extra}",
    ]
    env = {**os.environ, "KVMPREP_ARTIFACT_DIR": str(tmp / "artifacts")}
    return subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)


def summary(stderr: str) -> list[str]:
    return next(line.split() for line in stderr.splitlines() if line.split()[:1] == [TARGET])


def grep_tree(root: Path, needle: str) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and needle.encode() in path.read_bytes():
            found.append(str(path))
    return found


def test_package_mode_installs_the_node_package_and_converges_over_it(repository, tmp_path):
    target = lab_host(TARGET)
    first = apply_package_mode(tmp_path)
    assert first.returncode == 0, first.stderr

    installed = target.run("dpkg-query -W -f '${Status} ${Version}' opennebula-node-kvm")
    assert installed.stdout == "install ok installed 7.0.0-1", installed.stdout
    # The package's postinst ran (its own timestamped backups) ...
    assert target.run("ls /etc/libvirt/qemu.conf.20*").rc == 0
    # ... and kvmprep's settings hold over what it did; the socket goes to oneadmin's group,
    # as the package gives it, so that an upgrade's postinst and kvmprep agree.
    qemu = target.file("/etc/libvirt/qemu.conf").content_string
    assert 'user = "oneadmin"' in qemu
    assert "dynamic_ownership = 0" in qemu
    drop_in = target.file("/etc/systemd/system/libvirtd.socket.d/kvmprep.conf").content_string
    assert "SocketGroup=oneadmin" in drop_in
    assert target.run("runuser -u oneadmin -- virsh -c qemu:///system uri").rc == 0
    # The package's runtime pieces replace kvmprep's own.
    assert not target.file("/etc/sudoers.d/kvmprep-oneadmin").exists
    rules = target.run("runuser -u oneadmin -- sudo -n -l")
    assert rules.rc == 0, rules.stderr
    assert "/usr/sbin/iptables" in rules.stdout
    loads = target.run(
        "runuser -u oneadmin -- ruby -e \"require 'load_opennebula_paths'; "
        'exit(KVMPREP_TEST_PACKAGE ? 0 : 1)"'
    )
    assert loads.rc == 0, loads.stderr
    # The repository as OpenNebula's guide lays it out, its key, and the credentials root-only.
    sources = target.file("/etc/apt/sources.list.d/kvmprep-opennebula.sources").content_string
    assert f"URIs: {BASE}/{VERSION}/Debian/13" in sources
    auth = target.file("/etc/apt/auth.conf.d/kvmprep-opennebula.conf")
    assert (auth.user, auth.mode) == ("root", 0o600)
    assert PASSWORD in auth.content_string
    # The password is nowhere else: not in the output, not in the run's artifacts.
    assert PASSWORD not in first.stdout + first.stderr
    assert grep_tree(tmp_path / "artifacts", PASSWORD) == []

    again = apply_package_mode(tmp_path)
    assert again.returncode == 0, again.stderr
    assert summary(again.stderr)[2:4] == ["0", "0"], again.stderr


def test_a_repository_signed_by_another_key_is_refused(repository, tmp_path):
    target = lab_host(TARGET)
    target.run("apt-get remove -y -q opennebula-node-kvm")
    refused = apply_package_mode(tmp_path, key="other.key")
    assert refused.returncode == 2, refused.stderr
    assert TARGET in refused.stderr
    assert target.run("dpkg-query -W -f '${Status}' opennebula-node-kvm").stdout != (
        "install ok installed"
    )
    # The right key again: the host converges.
    fixed = apply_package_mode(tmp_path)
    assert fixed.returncode == 0, fixed.stderr
