"""Issue 16, findings 1 and 2 on the lab hosts (Debian 12 and 13): links planted by oneadmin or
by a local user where kvmprep writes as root. Each attack is planted on both hosts, kvmprep apply
runs, the target is shown untouched and the message names the path; with the link gone, apply
converges again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import testinfra

HOSTS = ("kvmprep-deb12", "kvmprep-deb13")
REMOTES = "/var/tmp/one"
SAVED = "/var/tmp/one.kvmprep-test-saved"


def lab_host(name: str):
    return testinfra.get_host(f"podman://{name}")


def apply_all() -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("kvmprep")), "apply"]
    command += ["-i", os.environ["MOLECULE_INVENTORY_FILE"]]
    return subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)


def as_user(host, user: str, command: str):
    result = host.run("runuser -u %s -- sh -c %s", user, command)
    assert result.rc == 0, result.stderr
    return result


def said(text: str, stderr: str) -> bool:
    """text in kvmprep's output, however its summary wrapped the lines."""
    return text in " ".join(stderr.split())


def stat_of(host, path: str) -> str:
    """Owner, group and mode of path (the link itself when it is one)."""
    return host.check_output("stat -c '%%U:%%G %%a' %s", path)


@pytest.fixture(scope="module")
def hosts():
    found = [lab_host(name) for name in HOSTS]
    for host in found:
        host.run("id mallory || useradd --no-create-home --shell /bin/sh mallory")
    yield found
    for host in found:
        host.run("rm -rf /var/lib/one/.config/libvirt.kvmprep-test")
        host.run("userdel mallory")


def test_a_config_link_to_modprobe_d_is_refused_and_modprobe_d_untouched(hosts):
    before = {}
    for host in hosts:
        host.run_test("mkdir -p /etc/modprobe.d")  # the lab's image has none
        listing = host.check_output("ls -A /etc/modprobe.d")
        before[host] = (stat_of(host, "/etc/modprobe.d"), listing)
        # oneadmin (or a driver running as oneadmin) replaces its libvirt client directory.
        as_user(
            host,
            "oneadmin",
            "mv ~/.config/libvirt ~/.config/libvirt.kvmprep-test && "
            "ln -s /etc/modprobe.d ~/.config/libvirt",
        )
    try:
        result = apply_all()
        assert result.returncode == 2, result.stderr
        assert said(
            "/var/lib/one/.config/libvirt is a symbolic link (owned by oneadmin): refusing to "
            "follow it as root",
            result.stderr,
        ), result.stderr
        for host in hosts:
            assert stat_of(host, "/etc/modprobe.d") == before[host][0]
            assert host.check_output("ls -A /etc/modprobe.d") == before[host][1]
            assert not host.file("/etc/modprobe.d/auth.conf").exists
    finally:
        for host in hosts:
            as_user(
                host,
                "oneadmin",
                "rm ~/.config/libvirt && mv ~/.config/libvirt.kvmprep-test ~/.config/libvirt",
            )


def test_a_remotes_dir_a_local_user_made_is_refused_and_etc_keeps_its_owner(hosts):
    for host in hosts:
        host.run_test("mv %s %s", REMOTES, SAVED)
        # Before the first apply: any local user may create /var/tmp/one, with a link to /etc.
        as_user(host, "mallory", f"mkdir {REMOTES} && ln -s /etc {REMOTES}/x")
    try:
        result = apply_all()
        assert result.returncode == 2, result.stderr
        assert said(f"{REMOTES} is owned by mallory: refusing to take it over", result.stderr), (
            result.stderr
        )
        for host in hosts:
            assert stat_of(host, "/etc") == "root:root 755"
            assert stat_of(host, "/etc/shadow").startswith("root:shadow ")
            assert stat_of(host, REMOTES).startswith("mallory:")
    finally:
        for host in hosts:
            host.run_test("rm -rf %s", REMOTES)


def test_a_remotes_dir_that_is_a_link_to_etc_is_refused(hosts):
    for host in hosts:
        as_user(host, "mallory", f"ln -s /etc {REMOTES}")
    try:
        result = apply_all()
        assert result.returncode == 2, result.stderr
        assert said(
            f"{REMOTES} is a symbolic link (owned by mallory): refusing to follow it as root",
            result.stderr,
        ), result.stderr
        for host in hosts:
            assert stat_of(host, "/etc") == "root:root 755"
            assert stat_of(host, "/etc/passwd") == "root:root 644"
    finally:
        for host in hosts:
            host.run_test("rm -f %s", REMOTES)


def test_a_root_owned_leftover_is_repaired_without_following_its_links(hosts):
    for host in hosts:
        # What an earlier `onehost sync` as root leaves, with a link to /etc in it.
        host.run_test("mv %s %s && chown -R root:root %s", SAVED, REMOTES, REMOTES)
        host.run_test("mkdir -p %s/im && touch %s/im/probe.rb", REMOTES, REMOTES)
        host.run_test("ln -s /etc %s/x", REMOTES)
    try:
        result = apply_all()
        assert result.returncode == 0, result.stderr
        for host in hosts:
            assert stat_of(host, "/etc") == "root:root 755"
            assert stat_of(host, "/etc/passwd") == "root:root 644"
            assert stat_of(host, REMOTES).startswith("oneadmin:oneadmin ")
            assert stat_of(host, f"{REMOTES}/im/probe.rb").startswith("oneadmin:oneadmin ")
            # The link itself is oneadmin's; what it points to is not.
            assert stat_of(host, f"{REMOTES}/x").startswith("oneadmin:oneadmin ")
    finally:
        for host in hosts:
            host.run("rm -f %s/x %s/im/probe.rb", REMOTES, REMOTES)
            host.run("rmdir %s/im", REMOTES)
