"""kvm_host_probe's ``domains`` group: the running QEMU domains and their machine types, read
from the status XML libvirt keeps in /run/libvirt/qemu (a temporary directory stands in)."""

import shutil
from pathlib import Path

import pytest

from ansible_collections.kvmprep.kvm.plugins.module_utils import kvm_host_probe_domains as probe

# libvirt 11.3's status file of a VM OpenNebula deployed on Debian 13 (abridged qemuCaps).
ONE_12 = Path(__file__).parent / "fixtures" / "domains" / "one-12.xml"

PLAIN = """<domstatus state='paused' reason='user' pid='4242'>
  <domain type='kvm' id='7'>
    <name>test-vm</name>
    <os><type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type></os>
  </domain>
</domstatus>
"""


@pytest.fixture
def state_dir(tmp_path):
    state = tmp_path / "qemu"
    state.mkdir()
    shutil.copy(ONE_12, state / "one-12.xml")
    (state / "test-vm.xml").write_text(PLAIN)
    # What else libvirt keeps there: pid files, per-domain directories, no status XML.
    (state / "one-12.pid").write_text("2113")
    (state / "domain-3-one-12").mkdir()
    (state / "dbus").mkdir()
    return state


def test_a_recorded_status_file_gives_name_id_and_machine_type():
    assert probe.parse_domain_status(ONE_12.read_text()) == (
        "one-12",
        "pc-q35-10.0",
        "running",
        2113,
    )


def test_every_running_domain_is_listed(state_dir):
    errors = []
    got = probe.gather_domains(str(state_dir), errors=errors)
    assert got["exists"] is True
    assert got["error"] is None
    assert got["running"] == [
        {
            "file": "one-12.xml",
            "name": "one-12",
            "machine": "pc-q35-10.0",
            "state": "running",
            "pid": 2113,
            "error": None,
            "vm_id": 12,
        },
        {
            # Not OpenNebula's: no VM id, the domain name stands for it.
            "file": "test-vm.xml",
            "name": "test-vm",
            "machine": "pc-i440fx-7.2",
            "state": "paused",
            "pid": 4242,
            "error": None,
            "vm_id": None,
        },
    ]
    assert errors == []


def test_a_broken_file_is_reported_not_fatal(state_dir):
    (state_dir / "one-13.xml").write_text("<domstatus state='running'><domain><name>one-13")
    (state_dir / "one-14.xml").write_text("<domain type='kvm'><name>one-14</name></domain>")
    errors = []
    got = probe.gather_domains(str(state_dir), errors=errors)
    broken = {d["file"]: d for d in got["running"]}
    assert broken["one-13.xml"]["name"] == "one-13"  # from the file name
    assert broken["one-13.xml"]["vm_id"] == 13
    assert broken["one-13.xml"]["machine"] is None
    assert broken["one-13.xml"]["error"].startswith("not well-formed XML: ")
    assert broken["one-14.xml"]["error"] == "no <domstatus><domain><name>"
    assert broken["one-12.xml"]["machine"] == "pc-q35-10.0"  # the others are still read
    assert [e.split(": ", 1)[0] for e in errors] == [
        str(state_dir / "one-13.xml"),
        str(state_dir / "one-14.xml"),
    ]


def test_a_status_file_without_a_machine_type():
    text = "<domstatus state='running'><domain><name>one-5</name><os/></domain></domstatus>"
    assert probe.parse_domain_status(text) == ("one-5", None, "running", None)


def test_no_directory_is_no_running_domain(tmp_path):
    errors = []
    got = probe.gather_domains(str(tmp_path / "absent"), errors=errors)
    assert got == {"path": str(tmp_path / "absent"), "exists": False, "error": None, "running": []}
    assert errors == []


def test_what_cannot_be_read_is_reported(state_dir, monkeypatch):
    """As a user other than root (the local audit): the files are root's, mode 0600."""
    real = probe.read_text_why
    denied = str(state_dir / "one-12.xml")
    monkeypatch.setattr(
        probe,
        "read_text_why",
        lambda path: (None, "Permission denied") if path == denied else real(path),
    )
    errors = []
    got = probe.gather_domains(str(state_dir), errors=errors)
    one_12 = got["running"][0]
    assert (one_12["name"], one_12["vm_id"], one_12["error"]) == ("one-12", 12, "Permission denied")
    assert one_12["machine"] is None
    assert got["running"][1]["machine"] == "pc-i440fx-7.2"
    assert errors == [f"{denied}: Permission denied"]


def test_a_directory_that_cannot_be_listed_is_reported(state_dir, monkeypatch):
    def listdir(path):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(probe.os, "listdir", listdir)
    errors = []
    got = probe.gather_domains(str(state_dir), errors=errors)
    assert (got["exists"], got["error"], got["running"]) == (True, "Permission denied", [])
    assert errors == [f"{state_dir}: Permission denied"]


@pytest.mark.parametrize(
    ("name", "vm_id"),
    [("one-12", 12), ("one-0", 0), ("one-", None), ("one-12-x", None), ("test-vm", None),
     ("ONE-3", None), ("one12", None)],
)  # fmt: skip
def test_one_vm_id(name, vm_id):
    assert probe.one_vm_id(name) == vm_id
