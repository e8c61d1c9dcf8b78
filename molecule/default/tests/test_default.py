"""Verify the converged lab hosts: configuration state on each host, then a KVM domain run by
oneadmin that live-migrates between the Debian 12 and Debian 13 hosts over libvirt's
authenticated TCP listener."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import testinfra

ONEADMIN_UID = 9869
DATASTORE = "/var/lib/one/datastores/0"
DISK = f"{DATASTORE}/kvmprep-test.qcow2"
DOMAIN = "kvmprep-test"
DOMAIN_XML = Path(__file__).resolve().parent.parent / "files" / "kvmprep-test.xml"
HOSTS = ("kvmprep-deb12", "kvmprep-deb13")


def lab_host(name: str):
    return testinfra.get_host(f"podman://{name}")


def as_oneadmin(host, command: str):
    return host.run("runuser -u oneadmin -- sh -c %s", command)


def active_value(text: str, key: str) -> str | None:
    """The value of the last uncommented `key = value` line of a libvirt config file."""
    value = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or "=" not in stripped:
            continue
        name, _, rest = stripped.partition("=")
        if name.strip() == key:
            value = rest.strip()
    return value


# --- configuration state, on every host ----------------------------------------------------


def test_qemu_conf_keys_set_and_comments_kept(host):
    text = host.file("/etc/libvirt/qemu.conf").content_string
    assert active_value(text, "dynamic_ownership") == "0"
    assert active_value(text, "user") == '"oneadmin"'
    assert active_value(text, "group") == '"oneadmin"'
    # The packaged comments and examples are still there, in place.
    assert "#dynamic_ownership = 1" in text
    assert '#user = "libvirt-qemu"' in text


def test_qemu_conf_backup_kept(host):
    backups = host.run("ls /etc/libvirt/ | grep -c '^qemu.conf\\..*~$'")
    assert int(backups.stdout.strip() or 0) >= 1


def test_oneadmin_account(host):
    user = host.user("oneadmin")
    assert user.uid == ONEADMIN_UID
    assert user.gid == ONEADMIN_UID
    assert user.home == "/var/lib/one"
    assert {"kvm", "libvirt"} <= set(user.groups)
    assert host.file("/var/lib/one/datastores").user == "oneadmin"


def test_dev_kvm_group_and_mode(host):
    kvm = host.file("/dev/kvm")
    assert host.run("test -c /dev/kvm").rc == 0
    assert kvm.group == "kvm"
    assert kvm.mode == 0o660
    rule = host.file("/etc/udev/rules.d/65-kvmprep-kvm.rules").content_string
    assert 'KERNEL=="kvm", GROUP="kvm", MODE="0660"' in rule


def test_libvirt_socket_restricted_to_group(host):
    sock = host.file("/run/libvirt/libvirt-sock")
    assert sock.is_socket
    assert sock.group == "libvirt"
    assert sock.mode == 0o660


def test_oneadmin_uses_qemu_system_without_password(host):
    result = as_oneadmin(host, "virsh -c qemu:///system uri")
    assert result.rc == 0, result.stderr
    assert result.stdout.strip() == "qemu:///system"


def test_tcp_listener_socket_activated_and_listening(host):
    tcp = host.service("libvirtd-tcp.socket")
    assert tcp.is_enabled
    assert tcp.is_running
    # On IPv4, or on IPv6 with IPv4 mapped (the container's network decides).
    assert any(host.socket(f"tcp://{a}:16509").is_listening for a in ("0.0.0.0", "::")), (
        host.check_output("ss -Hltn")
    )
    # libvirtd refuses to start under socket activation with --listen (LV-007).
    defaults = host.file("/etc/default/libvirtd").content_string
    assert "--listen" not in (active_value(defaults, "LIBVIRTD_ARGS") or "")


def test_tcp_listener_requires_sasl(host):
    conf = host.file("/etc/libvirt/libvirtd.conf").content_string
    assert active_value(conf, "auth_tcp") == '"sasl"'
    sasl = host.file("/etc/sasl2/libvirt.conf").content_string
    assert "mech_list: digest-md5" in sasl
    assert host.file("/etc/libvirt/passwd.db").mode == 0o600
    auth = host.file("/var/lib/one/.config/libvirt/auth.conf")
    assert auth.user == "oneadmin"
    assert auth.mode == 0o600


def test_tcp_listener_rejects_a_client_without_credentials(host):
    # root has no auth.conf: the listener must refuse it rather than let it in.
    result = host.run(
        "virsh -c 'qemu+tcp://%s/system?no_tty=1' list < /dev/null", host.check_output("hostname")
    )
    assert result.rc != 0
    assert "auth" in (result.stderr + result.stdout).lower()


def apparmor_rule_file(host) -> str:
    abstraction = host.file("/etc/apparmor.d/abstractions/libvirt-qemu").content_string
    if "abstractions/libvirt-qemu.d" in abstraction:
        return "/etc/apparmor.d/abstractions/libvirt-qemu.d/kvmprep-oneadmin"
    return "/etc/apparmor.d/local/abstractions/libvirt-qemu"


def test_apparmor_rule_in_the_abstraction_drop_in(host):
    content = host.file(apparmor_rule_file(host)).content_string
    # The datastores only, as OpenNebula documents them: not oneadmin's whole home.
    assert "owner /var/lib/one/datastores/** rwk," in content
    assert "/var/lib/one/**" not in content
    # The whole abstraction, drop-in included, still parses.
    assert host.run("apparmor_parser -Q -K /etc/apparmor.d/libvirt/TEMPLATE.qemu").rc == 0


# Where kvmprep writes (files, the directories it makes, the files it edits).
KVMPREP_WRITES = (
    "/etc/libvirt",
    "/etc/sasl2/libvirt.conf",
    "/etc/sudoers.d/kvmprep-oneadmin",
    "/etc/udev/rules.d/65-kvmprep-kvm.rules",
    "/etc/systemd/system/libvirtd.socket.d",
    "/etc/apparmor.d",
    "/var/lib/one",
    "/var/tmp/one",
)


def test_nothing_kvmprep_writes_is_world_writable(host):
    missing = [path for path in KVMPREP_WRITES if not host.file(path).exists]
    assert missing == []
    # load_opennebula_paths.rb, where Ruby finds it (the directory depends on the Ruby).
    ruby = host.check_output(
        'ruby -e \'require "load_opennebula_paths"; '
        "print $LOADED_FEATURES.grep(/load_opennebula_paths/).first'"
    )
    assert ruby.endswith("/load_opennebula_paths.rb")
    paths = " ".join((*KVMPREP_WRITES, ruby))
    found = host.run(f"find {paths} \\( -type f -o -type d \\) -perm -0002 -print")
    assert found.rc == 0, found.stderr
    assert found.stdout == ""


# --- a real KVM domain, run by oneadmin and live-migrated between the two hosts ------------


def domain_state(host) -> str:
    result = as_oneadmin(host, f"virsh -c qemu:///system domstate {DOMAIN}")
    return result.stdout.strip() if result.rc == 0 else "absent"


def migrate(source, destination_name: str) -> None:
    # --unsafe: the lab has no shared storage; each host has the same empty disk at the same path
    # (OpenNebula's kvmrc passes the same option for its ssh/local datastores).
    result = as_oneadmin(
        source,
        f"virsh -c qemu:///system migrate --live --unsafe {DOMAIN} "
        f"qemu+tcp://{destination_name}/system",
    )
    assert result.rc == 0, result.stderr


@pytest.fixture(scope="module")
def lab_domain():
    hosts = {name: lab_host(name) for name in HOSTS}
    for host in hosts.values():
        as_oneadmin(host, f"virsh -c qemu:///system destroy {DOMAIN}")
        created = as_oneadmin(
            host,
            f"mkdir -p {DATASTORE} && rm -f {DISK} && qemu-img create -q -f qcow2 {DISK} 16M",
        )
        assert created.rc == 0, created.stderr
    xml = DOMAIN_XML.read_text()
    source = hosts[HOSTS[0]]
    source.run("install -m 0644 /dev/null /tmp/kvmprep-test.xml")
    source.run(f"cat > /tmp/kvmprep-test.xml <<'XML'\n{xml}\nXML")
    started = as_oneadmin(source, "virsh -c qemu:///system create /tmp/kvmprep-test.xml")
    assert started.rc == 0, started.stderr
    yield hosts
    for host in hosts.values():
        as_oneadmin(host, f"virsh -c qemu:///system destroy {DOMAIN}")


def test_domain_runs_with_kvm_as_oneadmin(lab_domain):
    source = lab_domain[HOSTS[0]]
    assert domain_state(source) == "running"
    xml = as_oneadmin(source, f"virsh -c qemu:///system dumpxml {DOMAIN}").stdout
    assert "type='kvm'" in xml
    qemu = source.run("ps -o user= -C qemu-system-x86_64")
    assert qemu.stdout.split() == ["oneadmin"]


def test_domain_live_migrates_there_and_back(lab_domain):
    first, second = (lab_domain[name] for name in HOSTS)
    migrate(first, HOSTS[1])
    assert domain_state(second) == "running"
    assert domain_state(first) == "absent"
    time.sleep(1)
    migrate(second, HOSTS[0])
    assert domain_state(first) == "running"
    assert domain_state(second) == "absent"


# --- the CLI users run, against the converged lab ------------------------------------------


def kvmprep(*args: str) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("kvmprep")), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)


def test_kvmprep_apply_again_changes_nothing():
    result = kvmprep("apply", "-i", os.environ["MOLECULE_INVENTORY_FILE"])
    assert result.returncode == 0, result.stderr
    rows = {
        cells[0]: cells
        for cells in (line.split() for line in result.stderr.splitlines())
        if cells and cells[0] in HOSTS
    }
    assert set(rows) == set(HOSTS), result.stderr
    for cells in rows.values():
        # HOST OK CHANGED FAILED UNREACHABLE SKIPPED STATUS
        assert cells[2] == "0", result.stderr
        assert cells[3] == "0", result.stderr


def test_kvmprep_check_finds_the_converged_hosts_compliant():
    result = kvmprep("check", "-i", os.environ["MOLECULE_INVENTORY_FILE"], "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["schema"] == "kvmprep.check/1"
    assert set(report["hosts"]) == set(HOSTS)
    for name in HOSTS:
        host = report["hosts"][name]
        assert host["verdict"] == "compliant", host
        for control in ("LV-001", "LV-002", "LV-005", "LV-006", "USR-001", "USR-002"):
            assert host["controls"][control]["status"] == "PASS", (name, control, host)


def fingerprint(host) -> str:
    """Everything under /etc and /var/lib/one (names, types, modes, owners, sizes, times,
    contents), the domains libvirt knows and the state of its sockets. libvirtd.service itself
    is left out: under socket activation it exits when idle, on its own."""
    return host.check_output(
        "{ find /etc /var/lib/one -xdev -printf '%p %y %m %u %g %s %T@\\n' | sort;"
        "  find /etc /var/lib/one -xdev -type f -exec sha256sum {} + | sort;"
        "  virsh -c qemu:///system list --all --uuid;"
        "  systemctl is-active libvirtd.socket libvirtd-ro.socket libvirtd-tcp.socket;"
        "} | sha256sum"
    )


def test_kvmprep_check_changes_nothing_on_the_hosts():
    hosts = [lab_host(name) for name in HOSTS]
    before = [fingerprint(host) for host in hosts]
    result = kvmprep("check", "-i", os.environ["MOLECULE_INVENTORY_FILE"])
    assert result.returncode == 0, result.stderr
    assert [fingerprint(host) for host in hosts] == before


def test_kvmprep_check_smoke_boots_migrates_and_leaves_no_trace():
    hosts = [lab_host(name) for name in HOSTS]
    result = kvmprep(
        "check",
        "-i",
        os.environ["MOLECULE_INVENTORY_FILE"],
        "--smoke",
        "--migrate",
        "--format",
        "json",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for name in HOSTS:
        controls = report["hosts"][name]["controls"]
        assert controls["SMOKE-001"]["status"] == "PASS", controls["SMOKE-001"]
    assert report["hosts"][HOSTS[0]]["controls"]["SMOKE-002"]["status"] == "PASS"
    for host in hosts:
        assert "kvmprep-smoke" not in host.check_output("virsh -c qemu:///system list --all")
        assert not host.file("/var/lib/one/datastores/kvmprep-smoke").exists


def qemu_pid(host) -> str:
    return host.check_output(f"pgrep -u oneadmin -f 'qemu-system-x86_64 .*-name guest={DOMAIN},'")


def libvirtd_pid(host) -> str:
    return host.check_output("systemctl show -p MainPID --value libvirtd.service")


def test_drift_is_reported_with_its_fix_and_apply_repairs_it(lab_domain):
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    drifted = lab_host(HOSTS[0])
    # The lab domain runs here (it migrated back): the repair restarts libvirt under it.
    assert domain_state(drifted) == "running"
    vm_before, daemon_before = qemu_pid(drifted), libvirtd_pid(drifted)
    drifted.run("sed -i 's/^dynamic_ownership = 0$/dynamic_ownership = 1/' /etc/libvirt/qemu.conf")
    drifted.run("gpasswd -d oneadmin kvm")
    drifted.run("systemctl stop libvirtd-tcp.socket")

    found = kvmprep("check", "-i", inventory)
    assert found.returncode == 2, found.stderr
    lines = found.stderr.splitlines()
    for control in ("LV-001", "USR-002", "LV-005"):
        index = next(
            (i for i, line in enumerate(lines) if f"{control} " in line and " FAIL" in line), None
        )
        assert index is not None, (control, found.stderr)
        assert lines[index + 1].strip().startswith("fix: "), found.stderr
    assert f"{HOSTS[0]}: non-compliant" in found.stderr
    assert f"{HOSTS[1]}: compliant" in found.stderr

    repaired = kvmprep("apply", "-i", inventory, "--format", "json")
    assert repaired.returncode == 0, repaired.stderr
    # libvirt was restarted to apply qemu.conf, and the running VM did not notice.
    assert libvirtd_pid(drifted) not in (daemon_before, "0")
    assert qemu_pid(drifted) == vm_before
    assert domain_state(drifted) == "running"
    # The change report names each repaired item on the host it was repaired on (kvmprep
    # apply's "Changes" section and its JSON, kvmprep.changes/1), and nothing on the other.
    report = json.loads(repaired.stdout)
    assert report["schema"] == "kvmprep.changes/1", repaired.stdout
    assert report["check_mode"] is False
    repairs = [
        ("config", "qemu.conf: dynamic_ownership 1 -> 0"),
        ("accounts", "oneadmin added to kvm"),
        ("units", "libvirtd-tcp.socket started"),
        ("restart", "libvirt restarted once"),
    ]
    made = [(c["concern"], c["text"]) for c in report["hosts"][HOSTS[0]]["changes"]]
    for repair in repairs:
        assert repair in made, (repair, repaired.stdout)
    assert made.count(("restart", "libvirt restarted once")) == 1, repaired.stdout
    assert report["hosts"][HOSTS[0]]["status"] == "changed"
    assert report["hosts"][HOSTS[1]] == {"status": "ok", "changes": []}, repaired.stdout
    section = repaired.stderr[repaired.stderr.index("\nChanges:") :].splitlines()
    block = section[section.index(f"{HOSTS[0]}:") + 1 :]
    for _concern, text in repairs:
        assert f"  {text}" in block, repaired.stderr
    assert f"{HOSTS[1]}: no change" in section, repaired.stderr
    again = kvmprep("check", "-i", inventory)
    assert again.returncode == 0, again.stderr
    # A converged re-apply reports "no change" on every host.
    converged = kvmprep("apply", "-i", inventory, "--format", "json")
    assert converged.returncode == 0, converged.stderr
    for name in HOSTS:
        assert json.loads(converged.stdout)["hosts"][name]["changes"] == [], converged.stdout
        assert f"\n{name}: no change\n" in converged.stderr, converged.stderr


# --- faults injected into a converged host with a running VM -------------------------------


def apply_on(name: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return kvmprep("apply", "-i", os.environ["MOLECULE_INVENTORY_FILE"], "-l", name, *extra)


def test_apply_narrows_an_earlier_rule_over_oneadmins_home():
    host = lab_host(HOSTS[1])
    path = apparmor_rule_file(host)
    # What kvmprep wrote before it narrowed the rule (the seed's rule, in its managed block).
    host.run(
        f"sed -i 's|owner /var/lib/one/datastores/\\*\\* rwk,|owner /var/lib/one/** rw,|' {path}"
    )
    assert "owner /var/lib/one/** rw," in host.file(path).content_string
    result = apply_on(HOSTS[1])
    assert result.returncode == 0, result.stderr
    content = host.file(path).content_string
    assert "owner /var/lib/one/datastores/** rwk," in content
    assert "/var/lib/one/**" not in content
    assert host.run("apparmor_parser -Q -K /etc/apparmor.d/libvirt/TEMPLATE.qemu").rc == 0


def test_a_config_libvirt_cannot_parse_is_not_restarted_into(lab_domain):
    host = lab_host(HOSTS[0])
    assert domain_state(host) == "running"
    daemon_before = libvirtd_pid(host)
    # Someone broke libvirtd.conf by hand; kvmprep then has a change that needs a restart.
    host.run("cp -p /etc/libvirt/libvirtd.conf /etc/libvirt/qemu.conf /tmp/")
    host.run("echo 'this is not = = libvirt syntax' >> /etc/libvirt/libvirtd.conf")
    try:
        result = apply_on(HOSTS[0], "-e", '{"kvm_host_qemu_conf_extra": {"max_files": 32768}}')
        assert result.returncode == 2, result.stderr
        assert "libvirt was not restarted: /etc/libvirt/libvirtd.conf:" in result.stderr
        assert libvirtd_pid(host) == daemon_before
        assert domain_state(host) == "running"
    finally:
        host.run("cp -p /tmp/libvirtd.conf /tmp/qemu.conf /etc/libvirt/")


def test_a_restart_that_fails_is_rolled_back_and_the_vm_keeps_running(lab_domain):
    host = lab_host(HOSTS[0])
    qemu_conf = host.file("/etc/libvirt/qemu.conf").content_string
    vm_before = qemu_pid(host)
    # Valid syntax, but the QEMU driver refuses a string where it wants a number: the daemon
    # does not come back with it.
    result = apply_on(HOSTS[0], "-e", '{"kvm_host_qemu_conf_extra": {"max_processes": "lots"}}')
    assert result.returncode == 2, result.stderr
    assert "the previous configuration was restored and libvirt restarted with it" in result.stderr
    assert "does not stay up either" not in result.stderr
    # The change report says what was changed and put back, not a restart that failed.
    section = result.stderr[result.stderr.index("\nChanges:") :].splitlines()
    block = section[section.index(f"{HOSTS[0]}:") + 1 :]
    block = block[: next((i for i, line in enumerate(block) if not line.startswith("  ")), None)]
    assert any(
        line.startswith("  qemu.conf: max_processes ") and line.endswith(' -> "lots"')
        for line in block
    ), result.stderr
    assert any(
        line.startswith("  libvirt did not come back: its configuration from before this run")
        for line in block
    ), result.stderr
    assert "  libvirt restarted once" not in block, result.stderr
    assert host.file("/etc/libvirt/qemu.conf").content_string == qemu_conf
    assert qemu_pid(host) == vm_before
    assert domain_state(host) == "running"
    # Nothing is left half-configured: a normal run finds nothing to do.
    again = apply_on(HOSTS[0])
    assert again.returncode == 0, again.stderr


def socket_started_at(host) -> str:
    return host.check_output(
        "systemctl show -p ActiveEnterTimestampMonotonic --value libvirtd-tcp.socket"
    )


def test_a_later_failure_does_not_leave_a_change_unapplied():
    host = lab_host(HOSTS[1])
    before = socket_started_at(host)
    host.run("sed -i 's/^dynamic_ownership = 0$/dynamic_ownership = 1/' /etc/libvirt/qemu.conf")
    # qemu.conf is repaired, then the AppArmor step fails: its rule is missing, and a file
    # beside it that apparmor_parser rejects fails the validation of the rewritten abstraction
    # (a wrong value would not do: the settings check refuses it before any change). The
    # restart the repair needs happens all the same.
    rule = apparmor_rule_file(host)
    assert rule.endswith("/libvirt-qemu.d/kvmprep-oneadmin")  # Debian 13: a drop-in directory
    broken = rule.rsplit("/", 1)[0] + "/zz-kvmprep-test-broken"
    host.run(f"rm -f {rule} && echo 'this is not an apparmor rule' > {broken}")
    try:
        result = apply_on(HOSTS[1])
    finally:
        host.run(f"rm -f {broken}")
    assert result.returncode == 2, result.stderr
    assert "apparmor rejected" in " ".join(result.stderr.split()).lower(), result.stderr
    assert (
        active_value(host.file("/etc/libvirt/qemu.conf").content_string, "dynamic_ownership") == "0"
    )
    assert socket_started_at(host) != before
    again = apply_on(HOSTS[1])
    assert again.returncode == 0, again.stderr


def test_an_apply_killed_before_its_restart_is_finished_by_the_next(lab_domain):
    host = lab_host(HOSTS[0])
    assert domain_state(host) == "running"  # it keeps libvirtd up (no idle exit)
    # Drift the running daemon has read: qemu.conf changed, then libvirt restarted.
    host.run("sed -i 's/^dynamic_ownership = 0$/dynamic_ownership = 1/' /etc/libvirt/qemu.conf")
    host.run("systemctl restart libvirtd.service")
    time.sleep(3)
    daemon = libvirtd_pid(host)
    command = [
        str(Path(sys.executable).with_name("kvmprep")),
        "apply",
        "-i",
        os.environ["MOLECULE_INVENTORY_FILE"],
        "-l",
        HOSTS[0],
    ]
    # A controller killed outright (SIGKILL to kvmprep and its ansible-playbook) once qemu.conf
    # is repaired and before the handler restarts libvirt: nothing of the run can clean up.
    run = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    # Outside a terminal a task's line is written when it ends: the qemu.conf edit's own line
    # ("changed"; its include's line says "ok") comes before the handlers are flushed.
    for line in run.stderr:
        if "Configure QEMU and the libvirt daemon" in line and f"changed: {HOSTS[0]}" in line:
            os.killpg(run.pid, signal.SIGKILL)
            break
    run.wait(timeout=60)
    assert run.returncode == -signal.SIGKILL
    text = host.file("/etc/libvirt/qemu.conf").content_string
    assert active_value(text, "dynamic_ownership") == "0"
    assert libvirtd_pid(host) == daemon  # the change is on disk, the daemon never read it

    # The files look converged now; the next apply still restarts libvirt into them, once.
    finished = apply_on(HOSTS[0])
    assert finished.returncode == 0, finished.stderr
    assert libvirtd_pid(host) != daemon
    assert domain_state(host) == "running"
    settled = apply_on(HOSTS[0])
    assert settled.returncode == 0, settled.stderr
    row = next(line.split() for line in settled.stderr.splitlines() if line.startswith(HOSTS[0]))
    assert row[2] == "0", settled.stderr


# --- a client that keeps connecting while libvirt restarts ---------------------------------

LIBVIRT_UNITS = (
    "libvirtd.service",
    "libvirtd.socket",
    "libvirtd-ro.socket",
    "libvirtd-admin.socket",
    "libvirtd-tcp.socket",
)
CLIENT_STOP = "/tmp/kvmprep-client-stop"
# What OpenNebula's monitoring does to a host, condensed: connect to the listener again and
# again (a TCP connect is what socket activation starts the daemon on), a connect every few
# milliseconds (about 100 a second in the lab: the TIME_WAIT sockets stay far below the
# ephemeral ports). Bounded by the stop file $4, by $2 seconds and by $3 connects. Prints why
# it stopped, the connects tried and the connects accepted.
CLIENT_LOOP = r"""
address=$(getent ahostsv4 "$1" | awk 'NR == 1 {print $1}')
[ -n "$address" ] || exit 1
end=$((SECONDS + $2)); tries=0; accepted=0; reason=bounds
while [ $SECONDS -lt $end ] && [ $tries -lt $3 ]; do
  [ -e "$4" ] && { reason=stopped; break; }
  tries=$((tries + 1))
  { : <>"/dev/tcp/$address/16509"; } 2>/dev/null && accepted=$((accepted + 1))
  sleep 0.005
done
echo "$reason $tries $accepted"
"""

# The same on the host itself, where OpenNebula's probes ask libvirt through its unix socket: a
# connect as fast as Python makes them (no TIME_WAIT there). Bounded by seconds, connects and
# the stop file (its arguments, in that order); the same output.
LOCAL_LOOP = r"""
import os, socket, sys, time
end, tries, accepted, reason = time.monotonic() + float(sys.argv[1]), 0, 0, "bounds"
while time.monotonic() < end and tries < int(sys.argv[2]):
    if os.path.exists(sys.argv[3]):
        reason = "stopped"
        break
    tries += 1
    with socket.socket(socket.AF_UNIX) as client:
        try:
            client.connect("/run/libvirt/libvirt-sock")
            accepted += 1
        except OSError:
            pass
print(reason, tries, accepted)
"""


def journal_cursor(host) -> str:
    return host.check_output("journalctl -q -n 0 --show-cursor").removeprefix("-- cursor: ")


# Before the fix this failed every time: a connect between the daemon's stop and the sockets'
# restart started the daemon, systemd refused the sockets, the apply failed. With the sockets
# started one by one after the daemon's stop, the local loop still won on Debian 13.
@pytest.mark.parametrize("restarted", HOSTS)
def test_a_restart_under_a_reconnecting_client_brings_the_listener_back(lab_domain, restarted):
    other = next(name for name in HOSTS if name != restarted)
    host, client = lab_host(restarted), lab_host(other)
    with_vm = domain_state(host) == "running"  # the lab domain runs on HOSTS[0]
    assert with_vm == (restarted == HOSTS[0])
    vm_before = qemu_pid(host) if with_vm else None
    daemon_before = libvirtd_pid(host)
    cursor = journal_cursor(host)
    host.run("sed -i 's/^dynamic_ownership = 0$/dynamic_ownership = 1/' /etc/libvirt/qemu.conf")
    client.run(f"rm -f {CLIENT_STOP}")
    host.run(f"rm -f {CLIENT_STOP}")
    remote = ["podman", "exec", other, "bash", "-c", CLIENT_LOOP, "client", restarted]
    local = ["podman", "exec", restarted, "python3", "-c", LOCAL_LOOP]
    loops = {
        name: subprocess.Popen(
            [*command, "300", "2000000", CLIENT_STOP],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, command in (("remote", remote), ("local", local))
    }
    try:
        time.sleep(2)
        for loop in loops.values():
            assert loop.poll() is None, loop.communicate()
        result = apply_on(restarted)
    finally:
        client.run(f"touch {CLIENT_STOP}")
        host.run(f"touch {CLIENT_STOP}")
        outputs = {name: loop.communicate(timeout=60) for name, loop in loops.items()}
    for name, (out, err) in outputs.items():
        reason, tries, accepted = out.split()
        print(f"{name} client: {tries} connects, {accepted} accepted, {reason}")
        # The loop ran from before the apply to its end, and the daemon answered it.
        assert reason == "stopped", (out, err)
        assert int(accepted) > 0
    assert result.returncode == 0, result.stderr

    # libvirt was restarted into the repaired qemu.conf (under the running VM on HOSTS[0]).
    assert libvirtd_pid(host) not in (daemon_before, "0")
    if with_vm:
        assert qemu_pid(host) == vm_before
    states = host.run("systemctl is-active " + " ".join(LIBVIRT_UNITS)).stdout.split()
    assert states == ["active"] * len(LIBVIRT_UNITS), states
    assert host.check_output("ss -Hltn 'sport = :16509'")
    # Nothing systemd refused during this restart (the journal since before the apply).
    refused = host.run(
        f"journalctl -q --no-pager --after-cursor '{cursor}' | grep -E 'refusing|Failed to listen'"
    )
    assert refused.stdout == "", refused.stdout


def test_a_restart_that_fails_once_is_tried_again(lab_domain):
    host = lab_host(HOSTS[0])
    vm_before, daemon_before = qemu_pid(host), libvirtd_pid(host)
    # The listener's socket fails its next start, once: a runtime drop-in (outside what kvmprep
    # snapshots and rolls back) whose ExecStartPre fails while the flag file is there.
    dropin = "/run/systemd/system/libvirtd-tcp.socket.d"
    flag = "/run/kvmprep-fail-once"
    host.run(
        f"mkdir -p {dropin} && printf '%s\\n' '[Socket]' "
        f"'ExecStartPre=/bin/sh -c \"! rm {flag} 2>/dev/null\"' > {dropin}/fail-once.conf"
    )
    host.run(f"touch {flag}")
    host.run("sed -i 's/^dynamic_ownership = 0$/dynamic_ownership = 1/' /etc/libvirt/qemu.conf")
    try:
        result = apply_on(HOSTS[0])
        assert result.returncode == 0, result.stderr
        assert not host.file(flag).exists  # the first start of the socket failed
    finally:
        host.run(f"rm -rf {dropin} {flag} && systemctl daemon-reload")
    # The second try brought everything back, under the running VM, with the new qemu.conf.
    states = host.run("systemctl is-active " + " ".join(LIBVIRT_UNITS)).stdout.split()
    assert states == ["active"] * len(LIBVIRT_UNITS), states
    assert libvirtd_pid(host) not in (daemon_before, "0")
    assert qemu_pid(host) == vm_before
    text = host.file("/etc/libvirt/qemu.conf").content_string
    assert active_value(text, "dynamic_ownership") == "0"
