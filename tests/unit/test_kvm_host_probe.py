"""Tests of the kvm_host_probe module: pure functions, then end to end through Ansible."""

import ast
import grp
import hashlib
import importlib.util
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

# The module is thin: each group's facts come from its module_utils (importable once
# conftest put the collection on sys.path, as Ansible imports them).
from ansible_collections.kvmprep.kvm.plugins.module_utils import kvm_host_layouts as layouts
from ansible_collections.kvmprep.kvm.plugins.module_utils import kvm_host_libvirt_conf as lvconf
from ansible_collections.kvmprep.kvm.plugins.module_utils import (
    kvm_host_probe_access as probe_access,
)
from ansible_collections.kvmprep.kvm.plugins.module_utils import (
    kvm_host_probe_accounts as probe_accounts,
)
from ansible_collections.kvmprep.kvm.plugins.module_utils import (
    kvm_host_probe_apparmor as probe_apparmor,
)
from ansible_collections.kvmprep.kvm.plugins.module_utils import kvm_host_probe_apply as probe_apply
from ansible_collections.kvmprep.kvm.plugins.module_utils import (
    kvm_host_probe_common as probe_common,
)
from ansible_collections.kvmprep.kvm.plugins.module_utils import (
    kvm_host_probe_config as probe_config,
)
from ansible_collections.kvmprep.kvm.plugins.module_utils import (
    kvm_host_probe_identity as probe_identity,
)
from ansible_collections.kvmprep.kvm.plugins.module_utils import kvm_host_probe_kvm as probe_kvm
from ansible_collections.kvmprep.kvm.plugins.module_utils import (
    kvm_host_probe_libvirt as probe_libvirt,
)
from ansible_collections.kvmprep.kvm.plugins.module_utils import (
    kvm_host_probe_listen as probe_listen,
)
from ansible_collections.kvmprep.kvm.plugins.module_utils import kvm_host_probe_one as probe_one
from ansible_collections.kvmprep.kvm.plugins.module_utils import (
    kvm_host_probe_packages as probe_packages,
)
from ansible_collections.kvmprep.kvm.plugins.module_utils import kvm_host_probe_qemu as probe_qemu
from ansible_collections.kvmprep.kvm.plugins.module_utils import (
    kvm_host_probe_system as probe_system,
)
from tests.unit.ansible_env import ansible_env, run_module_locally

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "plugins" / "modules"
# The code the module shares with the front-end's (Ansible finds it in the collection).
MODULE_UTILS_DIR = ROOT / "plugins" / "module_utils"


def load_library_module(name):
    """Import plugins/modules/NAME.py by path (it is not a package)."""
    path = LIBRARY / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"kvmprep_library_{name}", path)
    module = importlib.util.module_from_spec(spec)
    # No __pycache__ for a module loaded under a name of the tests.
    saved, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = saved
    return module


probe = load_library_module("kvm_host_probe")
CPUINFO_INTEL = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic vmx smx est tm2 ssse3 sse4_1 hypervisor

processor\t: 1
vendor_id\t: GenuineIntel
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic vmx smx est tm2 ssse3 sse4_1 hypervisor
"""

CPUINFO_AMD = """\
processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep svm extapic cr8_legacy npt
"""

# A paravirtual/nested host like the lab machine: KVM works but no vmx/svm flag is exposed.
CPUINFO_PV = """\
processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov hypervisor
"""

AA_DEBIAN12 = """\
  #include <abstractions/base>
  #include <abstractions/consoles>
  owner /var/lib/libvirt/qemu/nvram/*_VARS.fd rwk,

  # Site-specific additions and overrides. See local/README for details.
  #include <local/abstractions/libvirt-qemu>
"""

AA_DEBIAN13 = """\
  #include <abstractions/base>
    include if exists <abstractions/passt>
  include if exists <abstractions/libvirt-qemu.d>

  # DEPRECATED: use abstractions/libvirt-qemu.d/ instead
  include if exists <local/abstractions/libvirt-qemu>
"""


class FakeModule:
    """Stands in for AnsibleModule: known binaries, scripted command outputs, recorded calls."""

    def __init__(self, bins=None, outputs=None):
        self.bins = bins or {}
        self.outputs = outputs or (lambda args: (0, "", ""))
        self.calls = []

    def get_bin_path(self, name, required=False, opt_dirs=None):
        return self.bins.get(name)

    def run_command(self, args, **kwargs):
        self.calls.append(list(args))
        return self.outputs(list(args))


# --- kvm ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "vendor", "flags"),
    [
        (CPUINFO_INTEL, "GenuineIntel", ["vmx"]),
        (CPUINFO_AMD, "AuthenticAMD", ["svm"]),
        (CPUINFO_PV, "AuthenticAMD", []),
        (CPUINFO_INTEL + CPUINFO_AMD, "GenuineIntel", ["svm", "vmx"]),
        ("processor : 0\nflags : vmxnet svm_lock\n", None, []),
        ("", None, []),
        (None, None, []),
    ],
)
def test_parse_cpuinfo(text, vendor, flags):
    assert probe_kvm.parse_cpuinfo(text) == (vendor, flags)


def test_module_states_from_sysfs(tmp_path):
    (tmp_path / "kvm" / "parameters").mkdir(parents=True)  # built in: no initstate
    (tmp_path / "kvm_intel").mkdir()
    (tmp_path / "kvm_intel" / "initstate").write_text("live\n")  # loadable, loaded
    (tmp_path / "kvm_pvm" / "parameters").mkdir(parents=True)
    (tmp_path / "kvmfoo").mkdir()
    assert probe_kvm.module_state("kvm", str(tmp_path)) == "builtin"
    assert probe_kvm.module_state("kvm_intel", str(tmp_path)) == "loaded"
    assert probe_kvm.module_state("kvm_amd", str(tmp_path)) == "absent"
    assert probe_kvm.kvm_module_states(str(tmp_path)) == {
        "kvm": "builtin",
        "kvm_intel": "loaded",
        "kvm_amd": "absent",
        "kvm_pvm": "builtin",
    }
    assert probe_kvm.kvm_module_states(str(tmp_path / "nowhere")) == {
        "kvm": "absent",
        "kvm_intel": "absent",
        "kvm_amd": "absent",
    }


def test_probe_dev_kvm_missing(tmp_path):
    res = probe_kvm.probe_dev_kvm(str(tmp_path / "kvm"))
    assert res == {
        "exists": False,
        "char_device": False,
        "mode": None,
        "owner": None,
        "group": None,
        "api_version": None,
        "create_vm": False,
        "error": "No such file or directory",
    }


def test_probe_dev_kvm_not_a_kvm_device(tmp_path):
    fake = tmp_path / "kvm"
    fake.write_text("")
    fake.chmod(0o640)
    res = probe_kvm.probe_dev_kvm(str(fake))
    assert res["exists"] is True
    assert res["char_device"] is False
    assert res["mode"] == "0640"
    assert res["owner"] == pwd.getpwuid(os.geteuid()).pw_name
    assert res["group"] == grp.getgrgid(os.getegid()).gr_name
    assert res["api_version"] is None
    assert res["create_vm"] is False
    assert res["error"] == "Inappropriate ioctl for device"


def test_probe_dev_kvm_on_dev_null():
    res = probe_kvm.probe_dev_kvm("/dev/null")
    assert res["char_device"] is True
    assert res["mode"] == "0666"
    assert res["api_version"] is None
    assert res["error"] == "Inappropriate ioctl for device"


# The project's machines (and CI) have a working /dev/kvm: the lab needs it too.
def test_gather_kvm_on_this_machine():
    res = probe_kvm.gather_kvm()
    assert res["dev_kvm"]["api_version"] == 12
    assert res["dev_kvm"]["create_vm"] is True
    assert res["dev_kvm"]["char_device"] is True
    assert res["usable"] is True
    assert res["modules"]["kvm"] in ("builtin", "loaded")


# --- libvirt --------------------------------------------------------------------------------


def test_unit_present(tmp_path):
    etc = tmp_path / "etc"
    lib = tmp_path / "lib"
    etc.mkdir()
    lib.mkdir()
    (lib / "libvirtd.service").write_text("[Unit]\n")
    (etc / "libvirtd.socket").symlink_to("/dev/null")  # masked
    (etc / "virtqemud.socket").symlink_to(tmp_path / "gone")  # dangling
    dirs = (str(etc), str(lib))
    assert probe_libvirt.unit_present("libvirtd.service", dirs)
    assert probe_libvirt.unit_present("libvirtd.socket", dirs)
    assert probe_libvirt.unit_present("virtqemud.socket", dirs)
    assert not probe_libvirt.unit_present("virtproxyd.socket", dirs)


def test_parse_systemctl_states():
    units = ["a.service", "b.socket"]
    assert probe_libvirt.parse_systemctl_states(units, "enabled\nmasked\n") == {
        "a.service": "enabled",
        "b.socket": "masked",
    }
    assert probe_libvirt.parse_systemctl_states(units, "enabled\n") is None
    assert probe_libvirt.parse_systemctl_states(units, None) is None


def _unit_dirs(tmp_path, names):
    lib = tmp_path / "lib"
    lib.mkdir()
    for name in names:
        (lib / name).write_text("[Unit]\n")
    return (str(lib),)


def test_gather_unit_states_one_call_per_verb(tmp_path):
    present = ["libvirtd.service", "libvirtd.socket", "libvirtd-tcp.socket"]
    dirs = _unit_dirs(tmp_path, present)
    answers = {
        "is-enabled": "enabled\nenabled\ndisabled\n",
        "is-active": "active\nactive\ninactive\n",
    }
    module = FakeModule(
        bins={"systemctl": "/bin/systemctl"},
        outputs=lambda args: (1, answers[args[1]], ""),
    )
    units = probe_libvirt.gather_unit_states(module, True, dirs)
    assert module.calls == [
        ["/bin/systemctl", "is-enabled", *present],
        ["/bin/systemctl", "is-active", *present],
    ]
    assert set(units) == set(probe_libvirt.UNITS)
    assert units["libvirtd-tcp.socket"] == {
        "present": True,
        "enabled": "disabled",
        "active": "inactive",
    }
    assert units["libvirtd.service"]["active"] == "active"
    assert units["virtqemud.socket"] == {
        "present": False,
        "enabled": "not-found",
        "active": "not-found",
    }


def test_gather_unit_states_falls_back_per_unit_when_output_misaligns(tmp_path):
    dirs = _unit_dirs(tmp_path, ["libvirtd.service", "libvirtd.socket"])

    def outputs(args):
        if len(args) > 3:
            return 1, "enabled\n", "Failed to get unit file state for libvirtd.socket"
        return (0, "enabled\n", "") if args[2] == "libvirtd.service" else (1, "", "error")

    module = FakeModule(bins={"systemctl": "/bin/systemctl"}, outputs=outputs)
    units = probe_libvirt.gather_unit_states(module, True, dirs)
    assert units["libvirtd.service"]["enabled"] == "enabled"
    assert units["libvirtd.socket"]["enabled"] == "unknown"


class FakeStart:
    """Stands in for probe_common.start: records what was started, answers when read."""

    def __init__(self, answers):
        self.answers = answers
        self.started = []
        self.read = []

    def __call__(self, args):
        self.started.append(list(args))
        fake = self

        class Call:
            proc = None

            def result(self):
                fake.read.append(list(args))
                return fake.answers(list(args))

        return Call()


def test_unit_states_started_before_they_are_read(tmp_path):
    present = ["libvirtd.service", "libvirtd-tcp.socket"]
    dirs = _unit_dirs(tmp_path, present)
    answers = {"is-enabled": "enabled\ndisabled\n", "is-active": "active\ninactive\n"}
    start = FakeStart(lambda args: (0, answers[args[1]]))
    module = FakeModule(bins={"systemctl": "/bin/systemctl"})
    started = probe_libvirt.start_unit_states(module, True, dirs, start=start)
    # Both calls run side by side from here; nothing read yet, nothing run through the module.
    assert start.started == [
        ["/bin/systemctl", "is-enabled", *present],
        ["/bin/systemctl", "is-active", *present],
    ]
    assert start.read == []
    assert module.calls == []
    units = probe_libvirt.finish_unit_states(module, started)
    assert units["libvirtd-tcp.socket"] == {
        "present": True,
        "enabled": "disabled",
        "active": "inactive",
    }
    assert units["libvirtd.service"]["active"] == "active"
    assert module.calls == []


def test_daemon_version_started_falls_back_to_virtqemud():
    bins = {"libvirtd": "/usr/sbin/libvirtd", "virtqemud": "/usr/sbin/virtqemud"}
    start = FakeStart(lambda args: (1, ""))
    module = FakeModule(bins=bins, outputs=lambda args: (0, "virtqemud (libvirt) 10.0.0\n", ""))
    started = probe_libvirt.start_daemon_version(module, start)
    assert start.started == [["/usr/sbin/libvirtd", "--version"]]
    # libvirtd answered nothing usable: virtqemud is asked then, through the module.
    assert probe_libvirt.finish_daemon_version(module, started) == "10.0.0"
    assert module.calls == [["/usr/sbin/virtqemud", "--version"]]
    assert probe_libvirt.start_daemon_version(FakeModule(), start) is None
    assert probe_libvirt.finish_daemon_version(FakeModule(), None) is None


def test_started_procs_are_what_the_peers_wait_for(tmp_path):
    dirs = _unit_dirs(tmp_path, ["libvirtd.service"])
    module = FakeModule(bins={"systemctl": "/bin/true", "libvirtd": "/bin/true"})
    starter = probe_common.Starter()
    version = probe_libvirt.start_daemon_version(module, starter)
    libvirt = probe_libvirt.start_unit_states(module, True, dirs, start=starter)
    procs = starter.procs
    assert len(procs) == 3
    assert all(isinstance(proc, subprocess.Popen) for proc in procs)
    probe_libvirt.finish_unit_states(module, libvirt)
    probe_libvirt.finish_daemon_version(module, version)
    assert all(proc.returncode == 0 for proc in procs)
    assert probe_common.Starter().procs == []
    # A command that cannot start leaves nothing to wait for.
    starter = probe_common.Starter()
    assert starter(["/nonexistent/kvmprep-probe-test"]).result() == (None, "")
    assert starter.procs == []


def test_start_runs_the_command_and_reads_it_later():
    call = probe_common.start(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert call.result() == (3, "out\n")
    assert call.result() == (3, "out\n")  # read once, kept
    assert probe_common.start(["/nonexistent/kvmprep-probe-test"]).result() == (None, "")


def test_start_gives_up_on_a_command_past_its_deadline():
    began = time.monotonic()
    call = probe_common.start(["sleep", "30"], timeout=0.2)
    assert call.result() == (None, "")
    assert time.monotonic() - began < 10
    assert call.proc.returncode is not None  # killed and reaped, not left behind


def test_gather_unit_states_without_systemd(tmp_path):
    dirs = _unit_dirs(tmp_path, ["libvirtd.service"])
    module = FakeModule(bins={"systemctl": "/bin/systemctl"})
    units = probe_libvirt.gather_unit_states(module, False, dirs)
    assert module.calls == []
    assert units["libvirtd.service"] == {"present": True, "enabled": "unknown", "active": "unknown"}
    assert units["virtqemud.socket"] == {
        "present": False,
        "enabled": "unknown",
        "active": "unknown",
    }


def _units(**states):
    """Build a units dict: name=(present, enabled, active); others absent."""
    units = {
        u: {"present": False, "enabled": "not-found", "active": "not-found"}
        for u in probe_libvirt.UNITS
    }
    for key, (present, enabled, active) in states.items():
        name = key.replace("__", ".").replace("_", "-")
        units[name] = {"present": present, "enabled": enabled, "active": active}
    return units


DEBIAN_DEFAULT = {
    "libvirtd__service": (True, "enabled", "active"),
    "libvirtd__socket": (True, "enabled", "active"),
    "libvirtd_tcp__socket": (True, "disabled", "inactive"),
}


@pytest.mark.parametrize(
    ("units", "binary", "layout"),
    [
        # Debian 12/13 default: monolithic libvirtd with socket activation.
        (_units(**DEBIAN_DEFAULT), True, "socket"),
        # Fedora/RHEL 9 default: modular daemons, libvirtd disabled.
        (
            _units(
                libvirtd__service=(True, "disabled", "inactive"),
                libvirtd__socket=(True, "disabled", "inactive"),
                virtqemud__socket=(True, "enabled", "active"),
                virtqemud__service=(True, "enabled", "inactive"),
            ),
            True,
            "modular",
        ),
        # virtqemud only active (socket-started), libvirtd masked.
        (
            _units(
                libvirtd__service=(True, "masked", "inactive"),
                virtqemud__service=(True, "disabled", "active"),
            ),
            False,
            "modular",
        ),
        # A mix: virtqemud enabled but libvirtd.service still running -> not modular.
        (
            _units(
                libvirtd__service=(True, "enabled", "active"),
                libvirtd__socket=(True, "enabled", "active"),
                virtqemud__socket=(True, "enabled", "active"),
            ),
            True,
            "socket",
        ),
        # Sockets masked (libvirt's documented switch to the traditional mode).
        (
            _units(
                libvirtd__service=(True, "enabled", "active"),
                libvirtd__socket=(True, "masked", "inactive"),
            ),
            True,
            "classic",
        ),
        # Older distribution: a libvirtd.service without socket units.
        (_units(libvirtd__service=(True, "enabled", "active")), True, "classic"),
        # No systemd at all, but the daemon is installed.
        (_units(), True, "classic"),
        # No systemd running: states unknown, unit files tell.
        (
            _units(
                libvirtd__service=(True, "unknown", "unknown"),
                libvirtd__socket=(True, "unknown", "unknown"),
            ),
            True,
            "socket",
        ),
        # Nothing installed.
        (_units(), False, "none"),
        ({}, False, "none"),
    ],
)
def test_decide_layout(units, binary, layout):
    assert probe_libvirt.decide_layout(units, binary) == layout


def test_a_static_unit_does_not_decide_the_layout():
    # kvm_host_layouts counts "static" as enabled (apply cannot enable such a unit); a static,
    # idle virtqemud.service still does not make a socket-activated libvirtd host modular.
    units = _units(
        **{
            "libvirtd.service": (True, "disabled", "inactive"),
            "libvirtd.socket": (True, "enabled", "active"),
            "virtqemud.service": (True, "static", "inactive"),
        }
    )
    assert layouts.is_enabled("static")
    assert probe_libvirt.decide_layout(units) == "socket"
    units["virtqemud.service"]["active"] = "active"
    assert probe_libvirt.decide_layout(units) == "modular"


def test_the_probe_asks_systemd_about_every_unit_of_the_layouts_table(tmp_path):
    assert probe_libvirt.UNITS == layouts.UNITS
    # apply on a modular host starts and enables these two: the probe must have looked at them.
    assert {"virtqemud-ro.socket", "virtqemud-admin.socket"} <= set(probe_libvirt.UNITS)
    dirs = _unit_dirs(tmp_path, layouts.UNITS)
    module = FakeModule(
        bins={"systemctl": "/bin/systemctl"},
        outputs=lambda args: (0, "enabled\n" * (len(args) - 2), ""),
    )
    units = probe_libvirt.gather_unit_states(module, True, dirs)
    assert set(units) == set(layouts.UNITS)
    assert units["virtqemud-ro.socket"]["enabled"] == "enabled"
    assert units["virtqemud-admin.socket"]["enabled"] == "enabled"


def test_the_module_utils_defaults_are_the_modules():
    assert probe.ARGUMENT_SPEC["remotes_dir"]["default"] == probe_one.ONE_REMOTES_DIR
    assert probe.ARGUMENT_SPEC["emulator"]["default"] == probe_qemu.ONE_EMULATOR


@pytest.mark.parametrize("path", sorted(MODULE_UTILS_DIR.glob("kvm_host_*.py")), ids=str)
def test_module_utils_parse_as_python_3_8(path):
    # They run on the hosts' python3: Python 3.8 syntax at most.
    ast.parse(path.read_text(), feature_version=(3, 8))


def test_parse_shell_assignments():
    text = (
        "# comment\n"
        '#LIBVIRTD_ARGS="--listen"\n'
        'LIBVIRTD_ARGS="--timeout 120"\n'
        "export libvirtd_opts='-d -l'\n"
        'LIBVIRTD_ARGS="--timeout 120 --listen"  # last one wins\n'
        "start_libvirtd=yes\n"
    )
    assert probe_libvirt.parse_shell_assignments(text) == {
        "LIBVIRTD_ARGS": "--timeout 120 --listen",
        "libvirtd_opts": "-d -l",
        "start_libvirtd": "yes",
    }
    assert probe_libvirt.parse_shell_assignments(None) == {}


def test_find_defaults(tmp_path):
    default = tmp_path / "default-libvirtd"
    bin_file = tmp_path / "libvirt-bin"
    sysconfig = tmp_path / "sysconfig-libvirtd"
    candidates = (
        (str(default), "LIBVIRTD_ARGS"),
        (str(bin_file), "libvirtd_opts"),
        (str(sysconfig), "LIBVIRTD_ARGS"),
    )
    assert probe_libvirt.find_defaults(candidates) == (None, None)
    sysconfig.write_text('LIBVIRTD_ARGS="--listen"\n')
    assert probe_libvirt.find_defaults(candidates) == (str(sysconfig), "--listen")
    bin_file.write_text('libvirtd_opts="-d -l"\nLIBVIRTD_ARGS="ignored"\n')
    assert probe_libvirt.find_defaults(candidates) == (str(bin_file), "-d -l")
    default.write_text('#LIBVIRTD_ARGS="--timeout 120"\n')
    assert probe_libvirt.find_defaults(candidates) == (str(default), None)


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("libvirtd (libvirt) 9.0.0\n", "9.0.0"),
        ("virtqemud (libvirt) 11.3.0\n", "11.3.0"),
        ("libvirtd (libvirt) 0.8.7\n", "0.8.7"),
        ("", None),
        (None, None),
    ],
)
def test_parse_daemon_version(text, version):
    assert probe_libvirt.parse_daemon_version(text) == version


def test_daemon_version_prefers_libvirtd_then_virtqemud():
    module = FakeModule(
        bins={"virtqemud": "/usr/sbin/virtqemud"},
        outputs=lambda args: (0, "virtqemud (libvirt) 10.0.0\n", ""),
    )
    assert probe_libvirt.daemon_version(module) == "10.0.0"
    assert module.calls == [["/usr/sbin/virtqemud", "--version"]]
    assert probe_libvirt.daemon_version(FakeModule()) is None


def test_run_never_raises():
    class Broken(FakeModule):
        def run_command(self, args, **kwargs):
            raise OSError(8, "Exec format error")

    assert probe_common.run(Broken(), ["/usr/sbin/libvirtd", "--version"]) == (None, "")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (AA_DEBIAN12, (False, True)),
        (AA_DEBIAN13, (True, True)),
        ("  # include <abstractions/libvirt-qemu.d>\n", (False, False)),
        ('  include "abstractions/libvirt-qemu.d/"\n', (True, False)),
        (None, (False, False)),
    ],
)
def test_apparmor_includes(text, expected):
    assert probe_apparmor.apparmor_includes(text) == expected


def test_gather_apparmor(tmp_path):
    enabled = tmp_path / "enabled"
    abstraction = tmp_path / "libvirt-qemu"
    module = FakeModule(bins={"apparmor_parser": "/sbin/apparmor_parser"})
    res = probe_apparmor.gather_apparmor(module, str(enabled), str(abstraction))
    assert res == {
        "enabled": False,
        "parser": True,
        "abstraction": False,
        "dropin_dir": False,
        "local_include": False,
        "rules": [],
    }
    enabled.write_text("Y\n")
    abstraction.write_text(AA_DEBIAN13)
    res = probe_apparmor.gather_apparmor(FakeModule(), str(enabled), str(abstraction))
    assert res == {
        "enabled": True,
        "parser": False,
        "abstraction": True,
        "dropin_dir": True,
        "local_include": True,
        "rules": [],
    }


def test_read_text_failures_are_none(tmp_path):
    assert probe_common.read_text(str(tmp_path / "missing")) is None
    assert probe_common.read_text(str(tmp_path)) is None


def test_module_source_parses_as_python_3_6():
    source = (LIBRARY / "kvm_host_probe.py").read_text()
    ast.parse(source, feature_version=(3, 6))


# --- end to end through Ansible -------------------------------------------------------------


@pytest.mark.ansible
def test_ansible_end_to_end_on_this_machine(tmp_path):
    result = run_module_locally(
        tmp_path,
        # By FQCN: the module and its module_utils as the collection gives them.
        "kvmprep.kvm.kvm_host_probe",
        {},
        "--check",
    )
    assert result.get("failed") is not True, result
    assert result["changed"] is False
    data = result["probe"]
    assert set(data) == {"kvm", "libvirt", "errors"}

    kvm = data["kvm"]
    assert set(kvm) == {"cpu_vendor", "vt_flags", "modules", "dev_kvm", "usable"}
    assert set(kvm["vt_flags"]) <= {"vmx", "svm"}
    assert {"kvm", "kvm_intel", "kvm_amd"} <= set(kvm["modules"])
    assert set(kvm["modules"].values()) <= {"loaded", "builtin", "absent"}
    if Path("/sys/module/kvm").is_dir():
        assert kvm["modules"]["kvm"] in ("builtin", "loaded")
    else:
        assert kvm["modules"]["kvm"] == "absent"
    dev = kvm["dev_kvm"]
    assert set(dev) == {
        "exists",
        "char_device",
        "mode",
        "owner",
        "group",
        "api_version",
        "create_vm",
        "error",
    }
    assert dev["exists"] is Path("/dev/kvm").exists()
    if os.access("/dev/kvm", os.R_OK | os.W_OK):
        assert dev["char_device"] is True
        assert len(dev["mode"]) == 4
        assert dev["api_version"] == 12
        assert dev["create_vm"] is True
        assert dev["error"] is None
        assert kvm["usable"] is True
    else:  # absent, or this user may not open it: no VM can be made
        assert dev["api_version"] is None
        assert kvm["usable"] is False

    lv = data["libvirt"]
    assert set(lv) == {
        "systemd",
        "units",
        "layout",
        "defaults_file",
        "defaults_args",
        "daemon_version",
        "apparmor",
    }
    assert lv["systemd"] is Path("/run/systemd/system").is_dir()
    assert set(lv["units"]) == set(probe_libvirt.UNITS)
    for unit in lv["units"].values():
        assert set(unit) == {"present", "enabled", "active"}
    assert lv["layout"] in ("modular", "socket", "classic", "none")
    assert set(lv["apparmor"]) == {
        "enabled",
        "parser",
        "abstraction",
        "dropin_dir",
        "local_include",
        "rules",
    }


# --- config, accounts, packages, listen, devices ---------------------------------------------

QEMU_CONF = """\
# dynamic_ownership = 1
#user = "root"
user = "oneadmin"
group = 'oneadmin'   # trailing comment
dynamic_ownership = 0
security_driver = [ "apparmor",
                    "selinux" ]
broken = "unterminated
cgroup_device_acl = [
    "/dev/null", "/dev/full",

    "/dev/kvm"
]
dynamic_ownership = 0 ;
"""


def test_parse_conf_active_keys():
    keys, invalid = lvconf.parse_conf(QEMU_CONF)
    assert keys == {
        "user": "oneadmin",
        "group": "oneadmin",
        "dynamic_ownership": 0,
        "security_driver": ["apparmor", "selinux"],
        "cgroup_device_acl": ["/dev/null", "/dev/full", "/dev/kvm"],
    }
    assert invalid == ["broken"]
    # libvirt takes no comment inside a list (virconf.c; libvirt 9.0 says "expecting a value").
    text = QEMU_CONF.replace('"/dev/full",\n\n', '"/dev/full",\n    # a comment\n')
    keys, invalid = lvconf.parse_conf(text)
    assert "cgroup_device_acl" not in keys
    assert invalid == ["broken", "cgroup_device_acl"]


@pytest.mark.parametrize(
    ("text", "value"),
    [("1", 1), ("-5 # x", -5), ('"none"', "none"), ("[]", []), ('["a" , "b",]', ["a", "b"])],
)
def test_parse_conf_value(text, value):
    assert lvconf.parse_conf_value(text) == value


@pytest.mark.parametrize("text", ["", "yes", '"a" b', "[a]", '["a" "b"]', "[", "1 2"])
def test_parse_conf_value_rejects(text):
    with pytest.raises(ValueError, match=r"expecting|not closed"):
        lvconf.parse_conf_value(text)


def test_gather_config_reports_unreadable_files(tmp_path):
    good = tmp_path / "qemu.conf"
    good.write_text("dynamic_ownership = 0\n")
    locked = tmp_path / "libvirtd.conf"
    locked.mkdir()  # reading a directory fails like an unreadable file, also as root
    errors = []
    res = probe_config.gather_config(
        errors,
        (("qemu.conf", str(good)), ("libvirtd.conf", str(locked)), ("x", str(tmp_path / "no"))),
    )
    assert res["qemu.conf"]["keys"] == {"dynamic_ownership": 0}
    assert res["libvirtd.conf"]["keys"] is None
    assert res["libvirtd.conf"]["error"] == "Is a directory"
    assert res["x"] == {
        "path": str(tmp_path / "no"),
        "exists": False,
        "keys": None,
        "invalid": [],
        "syntax_error": None,
        "error": None,
    }
    assert errors == [f"{locked}: Is a directory"]


def test_gather_accounts(tmp_path):
    import collections

    Pw = collections.namedtuple("Pw", "pw_name pw_uid pw_gid pw_dir pw_shell")
    Gr = collections.namedtuple("Gr", "gr_name gr_gid gr_mem")
    users = {"oneadmin": Pw("oneadmin", 9869, 9869, str(tmp_path), "/bin/bash")}
    groups = [
        Gr("oneadmin", 9869, []),
        Gr("kvm", 993, ["oneadmin"]),
        Gr("libvirt", 994, ["root"]),
    ]

    def getpwnam(name):
        return users[name]

    res = probe_accounts.gather_accounts(
        "oneadmin", ["kvm", "libvirt", "libvirtd"], getpwnam, lambda: groups
    )
    assert res["user"] == {
        "name": "oneadmin",
        "uid": 9869,
        "gid": 9869,
        "primary_group": "oneadmin",
        "home": str(tmp_path),
        "shell": "/bin/bash",
    }
    assert res["user_groups"] == ["kvm", "oneadmin"]
    assert res["groups"] == {
        "kvm": {"gid": 993, "members": ["oneadmin"]},
        "libvirt": {"gid": 994, "members": ["root"]},
        "libvirtd": None,
    }
    assert res["home"]["exists"] is True
    assert res["home"]["mode"] is not None

    res = probe_accounts.gather_accounts("nobody-here", ["kvm"], getpwnam, lambda: groups)
    assert res["user"] is None
    assert res["home"] is None
    assert res["user_groups"] == []


def test_find_qemu_and_programs(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, mode in (("qemu-system-x86_64", 0o755), ("qemu-img", 0o755), ("ruby", 0o644)):
        (bin_dir / name).write_text("")
        (bin_dir / name).chmod(mode)
    dirs = [str(tmp_path / "missing"), str(bin_dir)]
    assert probe_packages.find_qemu_system(dirs) == [str(bin_dir / "qemu-system-x86_64")]
    assert probe_common.find_program("qemu-img", dirs) == str(bin_dir / "qemu-img")
    assert probe_common.find_program("ruby", dirs) is None  # not executable
    assert probe_common.search_dirs("/a:/b::/a")[:2] == ["/a", "/b"]
    assert "/usr/libexec" in probe_common.search_dirs("")


PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:407D 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0100007F:4082 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1
   2: 0100007F:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1
   3: 0A00000A:407D 0B00000A:D431 01 00000000:00000000 00:00000000 00000000     0        0 4 1
"""
PROC_NET_TCP6 = """\
  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:407D 00000000000000000000000000000000:0000 0A
   1: 00000000000000000000000001000000:4082 00000000000000000000000000000000:0000 0A
"""


def test_parse_proc_net_tcp():
    assert probe_listen.parse_proc_net_tcp(PROC_NET_TCP, "ipv4", byteorder="little") == [
        {"address": "0.0.0.0", "port": 16509, "family": "ipv4"},
        {"address": "127.0.0.1", "port": 16514, "family": "ipv4"},
    ]
    assert probe_listen.parse_proc_net_tcp(PROC_NET_TCP6, "ipv6", byteorder="little") == [
        {"address": "::", "port": 16509, "family": "ipv6"},
        {"address": "::1", "port": 16514, "family": "ipv6"},
    ]
    assert probe_listen.parse_proc_net_tcp("", "ipv4") == []
    assert probe_listen.parse_proc_net_tcp("hdr\n 0: zz:407D 0 0A\n", "ipv4") == []


def test_gather_listen(tmp_path):
    tcp = tmp_path / "tcp"
    tcp.write_text(PROC_NET_TCP)
    errors = []
    res = probe_listen.gather_listen(errors, ((str(tcp), "ipv4"), (str(tmp_path / "tcp6"), "ipv6")))
    assert res["error"] is None
    assert len(res["sockets"]) == 2
    assert errors == []  # no tcp6 (IPv6 disabled) is not an error when tcp was read
    res = probe_listen.gather_listen(errors, ((str(tmp_path / "none"), "ipv4"),))
    assert res["sockets"] is None
    assert "No such file or directory" in res["error"]
    assert errors == [res["error"]]


def test_gather_devices(tmp_path):
    res = probe_kvm.gather_devices(("/dev/null", str(tmp_path / "tun")))
    assert res["/dev/null"]["char_device"] is True
    assert res["/dev/null"]["mode"] == "0666"
    assert res[str(tmp_path / "tun")]["exists"] is False
    assert res[str(tmp_path / "tun")]["error"] == "No such file or directory"


def test_apparmor_tree_rules():
    text = (
        "  owner /var/lib/one/** rw,\n# owner /x/** rw,\n  /y/** r,\n owner /z/** rwk,\n"
        "  deny /w/** rw,\n  /usr/share/qemu/ r,\n  /** rwk,\n  owner /v/* rw,\n"
        '  owner "/var/lib/one/**" rw,\n'
    )
    assert probe_apparmor.apparmor_tree_rules(text) == [
        "owner /var/lib/one/** rw,",
        "/y/** r,",
        "owner /z/** rwk,",
        "/** rwk,",
        'owner "/var/lib/one/**" rw,',
    ]


# --- access, identity, config syntax ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (QEMU_CONF.replace('broken = "unterminated\n', ""), None),
        ("", None),
        ('a = 1; b = "x" # c\n\n# only a comment\nc = [ "x",\n  "y", ]\n', None),
        ('d = """multi\nline"""\n', None),
        (QEMU_CONF, {"line": 8, "message": "unterminated string"}),
        ('user = "oneadmin\ngroup = "x"\n', {"line": 1, "message": "unterminated string"}),
        ("x = 1\nnot a setting\n", {"line": 2, "message": "expecting an assignment"}),
        ("x = 1\n= 2\n", {"line": 2, "message": "expecting a name"}),
        # libvirt names the line it ran out on, as its log says (libvirt 9.0's own parser).
        ('x = [ "a",\n "b"\n', {"line": 3, "message": "list is not closed with ]"}),
        ('x = [ "a" "b" ]\n', {"line": 1, "message": "expecting a separator in list"}),
        ("x = yes\n", {"line": 1, "message": "expecting a value"}),
        ('x = "a" "b"\n', {"line": 1, "message": "expecting a separator"}),
    ],
)
def test_conf_syntax_error(text, error):
    assert lvconf.conf_syntax_error(text) == error


def test_gather_config_reports_syntax_errors(tmp_path):
    good, bad = tmp_path / "good.conf", tmp_path / "bad.conf"
    good.write_text('user = "oneadmin"\n')
    bad.write_text('# header\nuser = "oneadmin\n')
    config = probe_config.gather_config([], files=(("good", str(good)), ("bad", str(bad))))
    assert config["good"]["syntax_error"] is None
    assert config["bad"]["syntax_error"] == {"line": 2, "message": "unterminated string"}


def _some_user_other_than_me():
    me = os.geteuid()
    for name in ("nobody", "daemon"):
        try:
            if pwd.getpwnam(name).pw_uid != me:
                return name
        except KeyError:
            continue
    pytest.skip("no unprivileged system user to test with")


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another user needs root")
def test_kvm_as_user_drops_privileges(tmp_path):
    user = _some_user_other_than_me()
    private = tmp_path / "kvm"
    private.write_text("")
    private.chmod(0o600)  # root can open it, the user cannot
    res = probe_access.probe_kvm_as_user(user, str(private))
    assert res["evaluated"] is True
    assert res["error"] == "Permission denied"
    assert res["api_version"] is None
    # /dev/null opens for anyone but does not answer the ioctl: the child did run as the user.
    res = probe_access.probe_kvm_as_user(user, "/dev/null")
    assert res["error"] == "Inappropriate ioctl for device"
    assert res["groups"]


def test_kvm_as_user_needs_root_or_the_user_itself():
    user = _some_user_other_than_me()
    res = probe_access.probe_kvm_as_user(user, "/dev/null", euid=pwd.getpwnam(user).pw_uid + 1)
    assert res == {
        "user": user,
        "evaluated": False,
        "groups": [],
        "api_version": None,
        "error": "not evaluated: needs root",
    }
    assert (
        probe_access.probe_kvm_as_user("no-such-user-kvmprep")["error"]
        == "no user no-such-user-kvmprep"
    )


def test_kvm_as_user_times_out_and_reaps_the_child(monkeypatch):
    def hang(write_fd, ids, path):
        time.sleep(30)
        os._exit(0)

    me = pwd.getpwuid(os.geteuid()).pw_name
    monkeypatch.setattr(probe_access, "_child_probe", hang)
    started = time.monotonic()
    res = probe_access.probe_kvm_as_user(me, "/dev/null", timeout=0.5, euid=os.geteuid() + 1)
    # euid differs from the user's uid only when not root; as root, pass the real euid instead.
    if res["error"] == "not evaluated: needs root":
        res = probe_access.probe_kvm_as_user(me, "/dev/null", timeout=0.5)
    assert res["error"] == "no answer within 0.5 s"
    assert time.monotonic() - started < 10
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)  # no child left behind


def test_polkit_rules_and_sockets(tmp_path):
    rules = tmp_path / "rules.d"
    rules.mkdir()
    (rules / "60-libvirt.rules").write_text(
        'polkit.addRule(function(action, subject) {\n  if (action.id == "org.libvirt.unix.manage"'
        ' &&\n      subject.isInGroup("libvirt")) { return polkit.Result.YES; }\n});\n'
    )
    (rules / "50-default.rules").write_text(
        'polkit.addAdminRule(function() { return ["unix-group:sudo"]; });\n'
    )
    (rules / "README").write_text('org.libvirt.unix.manage isInGroup("x")\n')
    assert probe_access.polkit_rules((str(rules), str(tmp_path / "none"))) == [
        {"file": str(rules / "60-libvirt.rules"), "groups": ["libvirt"]}
    ]
    sock = probe_access.stat_socket(str(tmp_path / "missing-sock"))
    assert sock["exists"] is False
    assert sock["socket"] is False
    assert "char_device" not in sock


def test_gather_identity(tmp_path):
    (tmp_path / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    dmi = tmp_path / "product_uuid"
    dmi.write_text("4C4C4544-0042-3510-8052-B4C04F4E3732\n")
    got = probe_identity.gather_identity(
        (str(tmp_path / "none"), str(dmi)), str(tmp_path / "machine-id")
    )
    assert got["machine_id"]["value"] == "0123456789abcdef0123456789abcdef"
    assert got["dmi"][0] == {
        "path": str(tmp_path / "none"),
        "value": None,
        "error": "No such file or directory",
    }
    assert got["dmi"][1]["value"] == "4C4C4544-0042-3510-8052-B4C04F4E3732"


# --- qemu: emulator, machine types, CPU, from real outputs ------------------------------------

QEMU_FIXTURES = ROOT / "tests" / "unit" / "fixtures" / "qemu"


def qemu_text(name):
    return (QEMU_FIXTURES / name).read_text()


@pytest.mark.parametrize(
    ("name", "count", "default", "aliases", "deprecated", "version", "package"),
    [
        (
            "debian12-qemu-7.2",
            59,
            "pc-i440fx-7.2",
            {"pc": ["pc-i440fx-7.2"], "q35": ["pc-q35-7.2"]},
            4,
            "7.2.22",
            "Debian 1:7.2+dfsg-7+deb12u18+b3",
        ),
        (
            "ubuntu24.04-qemu-8.2",
            131,
            "pc-i440fx-noble-v2",
            {
                "ubuntu": ["pc-i440fx-noble-v2"],
                "pc": ["pc-i440fx-noble", "pc-i440fx-8.2"],
                "ubuntu-q35": ["pc-q35-noble-v2"],
                "q35": ["pc-q35-noble", "pc-q35-8.2"],
            },
            5,
            "8.2.2",
            "Debian 1:8.2.2+ds-0ubuntu1.18",
        ),
        (
            "ubuntu25.04-qemu-9.2",
            135,
            "pc-i440fx-plucky",
            {
                "ubuntu": ["pc-i440fx-plucky"],
                "pc": ["pc-i440fx-9.2"],
                "ubuntu-q35": ["pc-q35-plucky"],
                "q35": ["pc-q35-9.2"],
            },
            41,
            "9.2.1",
            "Debian 1:9.2.1+ds-1ubuntu5.2",
        ),
        (
            "debian13-qemu-10.0",
            65,
            "pc-i440fx-10.0",
            {"pc": ["pc-i440fx-10.0"], "q35": ["pc-q35-10.0"]},
            43,
            "10.0.13",
            "Debian 1:10.0.13+ds-0+deb13u1",
        ),
    ],
)
def test_parse_machine_help_and_version_of_real_emulators(
    name, count, default, aliases, deprecated, version, package
):
    machines = probe_qemu.parse_machine_help(qemu_text(name + ".machine-help.txt"))
    assert len(machines["types"]) == count
    assert machines["default"] == default
    assert machines["aliases"] == aliases
    assert len(machines["deprecated"]) == deprecated
    assert "Supported" not in machines["types"]
    assert {"isapc", "none", "microvm"} <= set(machines["types"])
    assert not set(machines["aliases"]) & set(machines["types"])
    assert probe_qemu.parse_qemu_version(qemu_text(name + ".version.txt")) == (version, package)


def test_parse_machine_help_edge_cases():
    assert probe_qemu.parse_machine_help("") is None
    assert probe_qemu.parse_machine_help(None) is None
    assert probe_qemu.parse_machine_help("Supported machines are:\n") is None
    text = (
        "Supported machines are:\n"
        "pc-q35-mantic-hpb-maxcpus Ubuntu 23.10 PC (Q35 + ICH9, maxcpus=1024, 2009)\n"
        "pc-q35-2.4           Standard PC (Q35 + ICH9, 2009) (default) (deprecated)\n"
    )
    assert probe_qemu.parse_machine_help(text) == {
        "types": ["pc-q35-mantic-hpb-maxcpus", "pc-q35-2.4"],
        "default": "pc-q35-2.4",
        "aliases": {},
        "deprecated": ["pc-q35-2.4"],
    }
    assert probe_qemu.parse_qemu_version("qemu-kvm: unknown option") == (None, None)
    assert probe_qemu.parse_qemu_version("QEMU emulator version 6.2.0\n") == ("6.2.0", None)


@pytest.mark.parametrize(
    ("cache", "help_name", "version", "package", "usable"),
    [
        (
            "debian12-libvirt-9.0",
            "debian12-qemu-7.2",
            "7.2.22",
            "Debian 1:7.2+dfsg-7+deb12u18+b3",
            ["486", "486-v1", "pentium", "pentium-v1", "pentium2", "pentium2-v1", "pentium3",
             "pentium3-v1"],
        ),
        (
            "debian13-libvirt-11.3",
            "debian13-qemu-10.0",
            "10.0.13",
            "Debian 1:10.0.13+ds-0+deb13u1",
            ["486", "486-v1", "pentium", "pentium-v1", "pentium2", "pentium2-v1", "pentium3",
             "pentium3-v1"],
        ),
    ],
)  # fmt: skip
def test_libvirt_cache_says_what_machine_help_says(cache, help_name, version, package, usable):
    caps = probe_qemu.parse_qemu_caps(qemu_text(cache + ".qemu-caps.xml"))
    assert caps["emulator"] == "/usr/bin/qemu-system-x86_64"
    assert caps["version"] == version
    assert caps["package"] == package
    assert caps["kernel"].startswith("6.18.44")
    assert caps["cpu_models"] == usable
    from_help = probe_qemu.parse_machine_help(qemu_text(help_name + ".machine-help.txt"))
    cached = caps["machines"]
    # libvirt leaves out "none" (no machine at all); otherwise the same list and aliases.
    assert set(cached["types"]) == set(from_help["types"]) - {"none"}
    assert cached["default"] == from_help["default"]
    assert cached["aliases"] == from_help["aliases"]
    assert sorted(cached["deprecated"]) == sorted(from_help["deprecated"])


def test_parse_cpu_identity():
    assert probe_qemu.parse_cpu_identity(CPUINFO_INTEL) == {
        "vendor": "GenuineIntel",
        "model_name": "Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz",
        "family": None,
        "model": None,
        "stepping": None,
        "flags": sorted(CPUINFO_INTEL.split("flags\t\t: ")[1].split("\n")[0].split()),
    }
    assert probe_qemu.parse_cpu_identity(None)["flags"] == []
    assert probe_qemu.parse_cpu_identity(CPUINFO_AMD)["model_name"] is None


def _executable(path, text="#!/bin/sh\n"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_choose_emulator(tmp_path):
    one = tmp_path / "one" / "qemu-kvm-one"
    bin_dir = tmp_path / "bin"
    dirs = [str(tmp_path / "missing"), str(bin_dir)]
    assert probe_qemu.choose_emulator(str(one), "x86_64", dirs) == {
        "path": None,
        "source": None,
        "resolved": None,
        "opennebula_path": str(one),
        "opennebula_present": False,
    }
    qemu = _executable(bin_dir / "qemu-system-x86_64")
    got = probe_qemu.choose_emulator(str(one), "x86_64", dirs)
    assert (got["path"], got["source"]) == (str(qemu), "distribution")
    one.parent.mkdir()
    one.symlink_to(tmp_path / "gone")  # dangling: as if absent
    assert probe_qemu.choose_emulator(str(one), "x86_64", dirs)["source"] == "distribution"
    one.unlink()
    one.symlink_to(qemu)
    got = probe_qemu.choose_emulator(str(one), "x86_64", dirs)
    assert got == {
        "path": str(one),
        "source": "opennebula",
        "resolved": str(qemu),
        "opennebula_path": str(one),
        "opennebula_present": True,
    }
    kvm = _executable(bin_dir / "qemu-kvm")  # RHEL's name
    assert probe_qemu.choose_emulator(str(tmp_path / "x"), "aarch64", dirs)["path"] == str(kvm)


def test_run_parallel_runs_at_once_and_never_raises(tmp_path):
    start = time.monotonic()
    results = probe_qemu.run_parallel([["sleep", "0.4"], ["sleep", "0.4"]])
    assert time.monotonic() - start < 0.75
    assert [rc for rc, _out, _why in results] == [0, 0]
    (missing,) = probe_qemu.run_parallel([[str(tmp_path / "nothing")]])
    assert missing == (None, "", "No such file or directory")
    start = time.monotonic()
    (late,) = probe_qemu.run_parallel([["sleep", "30"]], timeout=0.3)
    assert late == (None, "", "no answer within 0.3 s")
    assert time.monotonic() - start < 5
    failing = _executable(tmp_path / "fails", "#!/bin/sh\necho one >&2\necho two >&2\nexit 3\n")
    assert probe_qemu.run_parallel([[str(failing)]]) == [(3, "", "two")]


TOUCH, CAT = shutil.which("touch"), shutil.which("cat")


def _fake_qemu(path, name, marker):
    """A stand-in emulator printing a real emulator's outputs; it leaves marker when run."""
    return _executable(
        path,
        "#!/bin/sh\n"
        f"{TOUCH} {marker}\n"
        f'case "$1" in --version) {CAT} {QEMU_FIXTURES / (name + ".version.txt")};;\n'
        f"  -machine) {CAT} {QEMU_FIXTURES / (name + '.machine-help.txt')};;\n"
        "  *) exit 1;; esac\n",
    )


@pytest.fixture
def no_system_qemu(monkeypatch):
    """Only the test's directories are searched, whatever this machine has installed."""
    monkeypatch.setattr(probe_common, "BIN_DIRS", [])
    monkeypatch.setattr(probe_common, "QEMU_DIRS", ())
    monkeypatch.setenv("PATH", "/nonexistent")


def _cache(cache_dir, path, text):
    cache_dir.mkdir(exist_ok=True)
    name = hashlib.sha256(str(path).encode()).hexdigest() + ".xml"
    (cache_dir / name).write_text(text)
    return cache_dir / name


def test_gather_qemu_without_any_emulator(tmp_path, no_system_qemu):
    errors = []
    got = probe_qemu.gather_qemu("9.0.0", str(tmp_path / "qemu-kvm-one"), errors=errors)
    assert got["emulator"]["path"] is None
    assert got["machines"] is None
    assert got["error"].startswith("no QEMU emulator: ")
    assert got["cpu"]["models"]["usable"] is None
    assert got["libvirt_version"] == "9.0.0"
    assert errors == []  # no QEMU is a finding (PKG-002), not a read error


def test_gather_qemu_runs_the_emulator_when_libvirt_has_not_probed_it(tmp_path, no_system_qemu):
    marker = tmp_path / "ran"
    one = _fake_qemu(tmp_path / "qemu-kvm-one", "debian13-qemu-10.0", marker)
    got = probe_qemu.gather_qemu("11.3.0", str(one), cache_dir=str(tmp_path / "cache"))
    assert marker.exists()
    assert got["source"] == "emulator"
    assert (got["version"], got["package"]) == ("10.0.13", "Debian 1:10.0.13+ds-0+deb13u1")
    assert got["machines"]["aliases"]["q35"] == ["pc-q35-10.0"]
    assert got["error"] is None
    assert got["cpu"]["models"]["error"] == f"libvirt has not probed {one} yet"


def _trusted_cache_text(binary, kernel=None):
    uname = os.uname()
    text = qemu_text("debian13-libvirt-11.3.qemu-caps.xml")
    text = text.replace("/usr/bin/qemu-system-x86_64", str(binary))
    text = re.sub(r"<qemuctime>\d+<", f"<qemuctime>{int(Path(binary).stat().st_ctime)}<", text)
    kernel = kernel or f"{uname.release} {uname.version}"
    return re.sub(r"<kernelVersion>[^<]*<", f"<kernelVersion>{kernel}<", text)


def test_gather_qemu_reads_libvirts_cache_first(tmp_path, no_system_qemu):
    marker = tmp_path / "ran"
    real = _fake_qemu(tmp_path / "bin" / "qemu-system-x86_64", "debian12-qemu-7.2", marker)
    one = tmp_path / "qemu-kvm-one"
    one.symlink_to(real)
    cache_dir = tmp_path / "cache"
    _cache(cache_dir, real, _trusted_cache_text(real))  # libvirt probed the real binary
    got = probe_qemu.gather_qemu("11.3.0", str(one), cache_dir=str(cache_dir))
    assert not marker.exists()  # no QEMU was started
    assert got["source"] == "libvirt"
    assert got["version"] == "10.0.13"  # what the cache says (it is the Debian 13 one)
    assert got["machines"]["default"] == "pc-i440fx-10.0"
    assert got["cpu"]["models"]["usable"][-1] == "pentium3-v1"
    assert got["cpu"]["models"]["error"] is None


def test_gather_qemu_distrusts_a_cache_libvirt_would_redo(tmp_path, no_system_qemu):
    marker = tmp_path / "ran"
    one = _fake_qemu(tmp_path / "qemu-kvm-one", "debian12-qemu-7.2", marker)
    cache_dir = tmp_path / "cache"
    stale = _trusted_cache_text(one).replace("<qemuctime>", "<qemuctime>1")
    entry = _cache(cache_dir, one, stale)
    got = probe_qemu.gather_qemu(None, str(one), cache_dir=str(cache_dir))
    assert marker.exists()
    assert (got["source"], got["version"]) == ("emulator", "7.2.22")
    assert got["cpu"]["models"] == {
        "usable": None,
        "source": None,
        "error": "QEMU changed since libvirt probed it",
    }
    # Another kernel: the machine types still hold, the usable CPU models may not.
    entry.write_text(_trusted_cache_text(one, kernel="5.10.0-1 #1 SMP"))
    marker.unlink()
    got = probe_qemu.gather_qemu(None, str(one), cache_dir=str(cache_dir))
    assert not marker.exists()
    assert got["source"] == "libvirt"
    assert got["cpu"]["models"]["usable"] is None
    assert got["cpu"]["models"]["error"] == "libvirt probed QEMU under another kernel"
    # Unreadable (a directory stands in for a root-only file): said, and QEMU runs.
    entry.unlink()
    entry.mkdir()
    errors = []
    got = probe_qemu.gather_qemu(None, str(one), cache_dir=str(cache_dir), errors=errors)
    assert got["source"] == "emulator"
    assert got["cpu"]["models"]["error"] == f"{entry}: Is a directory"
    assert errors == [f"{entry}: Is a directory"]


def test_gather_qemu_when_the_emulator_fails(tmp_path, no_system_qemu):
    broken = _executable(tmp_path / "qemu-kvm-one", "#!/bin/sh\necho 'cannot run' >&2\nexit 1\n")
    errors = []
    got = probe_qemu.gather_qemu(None, str(broken), cache_dir=str(tmp_path / "c"), errors=errors)
    assert got["machines"] is None
    assert got["version"] is None
    assert got["error"] == (f"{broken} --version: cannot run; {broken} -machine help: cannot run")
    assert errors == got["error"].split("; ")


@pytest.mark.ansible
def test_qemu_group_end_to_end_through_ansible(tmp_path):
    """The module as Ansible runs it, with a stand-in emulator (this machine has no QEMU)."""
    ansible = shutil.which("ansible", path=str(Path(sys.executable).parent)) or "ansible"
    one = _fake_qemu(tmp_path / "qemu-kvm-one", "debian13-qemu-10.0", tmp_path / "ran")
    env = ansible_env(tmp_path)
    args = json.dumps({"gather": ["qemu"], "emulator": str(one)})
    cmd = [ansible, "localhost", "-i", "localhost,", "-c", "local"]
    cmd += [
        "-m",
        "kvmprep.kvm.kvm_host_probe",
        "-a",
        args,
        "-e",
        f"ansible_python_interpreter={sys.executable}",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    assert result.get("failed") is not True, result
    qemu = result["probe"]["qemu"]
    assert qemu["emulator"]["source"] == "opennebula"
    assert qemu["version"] == "10.0.13"
    assert qemu["machines"]["aliases"]["q35"] == ["pc-q35-10.0"]
    assert set(qemu["cpu"]) == {
        "vendor", "model_name", "family", "model", "stepping", "flags", "models"
    }  # fmt: skip


# --- installed, paths, ruby_dir, sasl, blocks: what apply decides on --------------------------

DPKG_STATUS = """\
Package: libvirt-daemon-system
Status: install ok installed
Architecture: amd64
Description: a multi-line
 description: with a colon

Package: ruby
Status: deinstall ok config-files
Architecture: all

Package: sudo
Status: hold ok installed
Architecture: amd64

Package: rsync
Status: install ok half-configured
Architecture: amd64
"""


def test_dpkg_installed_counts_only_installed_packages():
    have = probe_apply.dpkg_installed(DPKG_STATUS)
    assert have == {
        "libvirt-daemon-system",
        "libvirt-daemon-system:amd64",
        "sudo",
        "sudo:amd64",
    }


def test_gather_installed_from_dpkg(tmp_path):
    status = tmp_path / "status"
    status.write_text(DPKG_STATUS)
    names = ["libvirt-daemon-system", "ruby", "sudo:amd64", "rsync", "sudo=1.9*", "qemu-kvm"]
    found = probe_apply.gather_installed(FakeModule(), names, status_path=str(status))
    # A name with a version (or anything dpkg does not name) is left to apt: "missing".
    assert found == {"manager": "dpkg", "missing": ["ruby", "rsync", "sudo=1.9*", "qemu-kvm"]}


def test_gather_installed_from_rpm(tmp_path):
    rpm = tmp_path / "rpm"
    rpm.write_text("#!/bin/sh\n")
    rpm.chmod(0o755)
    module = FakeModule(
        outputs=lambda args: (1, "libvirt-client\npackage ruby is not installed\n", "")
    )
    found = probe_apply.gather_installed(
        module,
        ["libvirt-client", "ruby", "@virt"],
        status_path=str(tmp_path / "none"),
        dirs=[str(tmp_path)],
    )
    assert module.calls == [[str(rpm), "-q", "--qf", "%{NAME}\n", "libvirt-client", "ruby"]]
    assert found == {"manager": "rpm", "missing": ["ruby", "@virt"]}


def test_gather_installed_without_a_package_database(tmp_path):
    found = probe_apply.gather_installed(
        FakeModule(), ["ruby"], status_path=str(tmp_path / "none"), dirs=[str(tmp_path)]
    )
    assert found == {"manager": None, "missing": ["ruby"]}


def test_gather_paths(tmp_path):
    there = tmp_path / "there"
    there.mkdir(mode=0o750)
    there.chmod(0o750)
    found = probe_apply.gather_paths([str(there), str(tmp_path / "gone")])
    assert found[str(there)]["exists"] is True
    assert found[str(there)]["mode"] == "0750"
    assert found[str(tmp_path / "gone")]["exists"] is False
    assert "path" not in found[str(there)]


def _fake_ruby(tmp_path, script):
    ruby = tmp_path / "ruby"
    ruby.write_text("#!/bin/sh\n" + script)
    ruby.chmod(0o755)
    return [str(tmp_path)]


def test_ruby_dir(tmp_path):
    dirs = _fake_ruby(
        tmp_path, 'case "$2" in *vendordir*) printf /usr/lib/ruby/vendor_ruby;; esac\n'
    )
    started = probe_apply.start_ruby_dir(dirs=dirs)
    assert probe_apply.finish_ruby_dir(started) == {
        "dir": "/usr/lib/ruby/vendor_ruby",
        "error": None,
    }


def test_ruby_dir_says_why_not(tmp_path):
    dirs = _fake_ruby(
        tmp_path, "echo '-e:1:in abort: neither the vendor nor the site' >&2; exit 1\n"
    )
    assert probe_apply.finish_ruby_dir(probe_apply.start_ruby_dir(dirs=dirs)) == {
        "dir": None,
        "error": "-e:1:in abort: neither the vendor nor the site",
    }
    assert probe_apply.finish_ruby_dir(
        probe_apply.start_ruby_dir(dirs=[str(tmp_path / "none")])
    ) == {
        "dir": None,
        "error": "ruby is not installed",
    }
    slow = _fake_ruby(tmp_path, "sleep 5\n")
    found = probe_apply.finish_ruby_dir(probe_apply.start_ruby_dir(dirs=slow), timeout=0.2)
    assert found == {"dir": None, "error": "ruby gave no answer within 0.2 s"}


def test_sasl_user_listed():
    text = "oneadminx@host: userPassword\nroot@host: userPassword\n"
    assert not probe_apply.sasl_user_listed(text, "oneadmin")
    assert probe_apply.sasl_user_listed(text + "oneadmin@host: userPassword\n", "oneadmin")


def test_gather_sasl(tmp_path):
    lister = tmp_path / "sasldblistusers2"
    lister.write_text("#!/bin/sh\n")
    lister.chmod(0o755)
    db = tmp_path / "passwd.db"
    db.write_text("")
    (tmp_path / "passwd.db.kvmprep").write_text("abc\n")
    module = FakeModule(outputs=lambda args: (0, "oneadmin@h: userPassword\n", ""))
    dirs = [str(tmp_path)]
    assert probe_apply.gather_sasl(module, str(db), "oneadmin", "abc", dirs=dirs) == {
        "user_present": True,
        "fingerprint_matches": True,
    }
    assert module.calls == [[str(lister), "-f", str(db)]]
    assert probe_apply.gather_sasl(module, str(db), "other", "abd", dirs=dirs) == {
        "user_present": False,
        "fingerprint_matches": False,
    }
    # No database yet: nobody is in it, whatever a stale fingerprint file says.
    db.unlink()
    found = probe_apply.gather_sasl(module, str(db), "oneadmin", "abc", dirs=dirs)
    assert found["user_present"] is False


MARKER = "# {mark} kvmprep: OpenNebula datastores"
RULE = "  owner /var/lib/one/datastores/** rwk,"
BEGIN = "# BEGIN kvmprep: OpenNebula datastores"
END = "# END kvmprep: OpenNebula datastores"


@pytest.mark.parametrize(
    ("text", "present"),
    [
        (
            f"{BEGIN}\n{RULE}\n{END}\n",
            True,
        ),
        (
            f"x\n{BEGIN}\n{RULE}\n{END}",
            True,
        ),
        (
            f"{BEGIN}\n  owner /srv/one/** rw,\n{END}\n",
            False,
        ),
        (f"{RULE}\n", False),
        (
            f"{END}\n{RULE}\n{BEGIN}\n",
            False,
        ),
        ("", False),
        (None, False),
    ],
)
def test_block_present(text, present):
    assert probe_apply.block_present(text, MARKER, RULE) is present


@pytest.mark.ansible
def test_block_present_agrees_with_blockinfile(tmp_path):
    """The probe says present exactly when blockinfile would leave the file as it is."""
    target = tmp_path / "libvirt-qemu"
    target.write_text("# local rules\n")
    args = {"path": str(target), "marker": MARKER, "block": RULE, "create": True}
    for expect_changed in (True, False):
        assert probe_apply.block_present(target.read_text(), MARKER, RULE) is not expect_changed
        result = run_module_locally(tmp_path, "ansible.builtin.blockinfile", args)
        assert result["changed"] is expect_changed, result
    assert (
        probe_apply.gather_blocks([{"path": str(target), "marker": MARKER, "block": RULE}])[
            str(target)
        ]["present"]
        is True
    )


@pytest.mark.skipif(not Path(probe_apply.DPKG_STATUS).exists(), reason="not a dpkg system")
def test_gather_installed_on_this_machine():
    # The suite runs on Debian: its own interpreter's package is installed.
    found = probe_apply.gather_installed(FakeModule(), ["python3", "kvmprep-no-such-package"])
    assert found == {"manager": "dpkg", "missing": ["kvmprep-no-such-package"]}


# --- system (SYS-001, FLEET-006, FLEET-007) and one's sudo and kvmrc (ONE-009, ONE-010) -------

CHRONYC_TRACKING = """\
Reference ID    : C0A80001 (192.168.0.1)
Stratum         : 3
System time     : 0.000012 seconds slow of NTP time
Leap status     : {leap}
"""
NTPQ_PEERS = """\
     remote           refid      st t when poll reach   delay   offset  jitter
==============================================================================
{mark}192.168.0.1     .GPS.            1 u   33   64  377    0.321   -0.012   0.004
+192.168.0.2     192.168.0.1      2 u   12   64  377    0.411    0.020   0.010
"""


def test_parse_clock_reports():
    assert probe_system.parse_chronyc_tracking(CHRONYC_TRACKING.format(leap="Normal")) == (
        True,
        "chrony: leap status Normal",
    )
    synced, detail = probe_system.parse_chronyc_tracking(
        CHRONYC_TRACKING.format(leap="Not synchronised")
    )
    assert synced is False
    assert "Not synchronised" in detail
    assert probe_system.parse_chronyc_tracking("506 Cannot talk to daemon")[0] is None
    assert probe_system.parse_ntpq_peers(NTPQ_PEERS.format(mark="*")) == (
        True,
        "ntpd: following 192.168.0.1",
    )
    assert probe_system.parse_ntpq_peers(NTPQ_PEERS.format(mark=" "))[0] is False


def _fake_programs(tmp_path, *names):
    for name in names:
        path = tmp_path / name
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    return [str(tmp_path)]


def test_gather_clock_asks_timedatectl_then_chrony_then_the_kernel(tmp_path):
    asked = []

    def run(answers):
        def fake(args):
            asked.append(Path(args[0]).name)
            return answers[Path(args[0]).name]

        return fake

    dirs = _fake_programs(tmp_path, "timedatectl", "chronyc")
    kernel = lambda: (False, "kernel: unsynchronised")  # noqa: E731
    answers = {"timedatectl": (0, "yes\n", ""), "chronyc": (0, "", "")}
    clock = probe_system.gather_clock(dirs, systemd=True, kernel=kernel, run=run(answers))
    assert clock == {
        "synchronized": True,
        "source": "timedatectl",
        "detail": "timedatectl: NTPSynchronized=yes",
    }
    assert asked == ["timedatectl"]
    # No systemd (or timedatectl fails): chrony says.
    answers["chronyc"] = (0, CHRONYC_TRACKING.format(leap="Not synchronised"), "")
    answers["timedatectl"] = (1, "", "Failed to connect to bus: No such file or directory\n")
    clock = probe_system.gather_clock(dirs, systemd=True, kernel=kernel, run=run(answers))
    assert clock["source"] == "chrony"
    assert clock["synchronized"] is False
    # Nothing answers: the kernel's flag, and the detail says what was tried.
    answers["chronyc"] = (1, "", "506 Cannot talk to daemon\n")
    clock = probe_system.gather_clock(dirs, systemd=True, kernel=kernel, run=run(answers))
    assert clock["source"] == "kernel"
    assert clock["synchronized"] is False
    assert "timedatectl: Failed to connect to bus" in clock["detail"]
    assert "chronyc: 506 Cannot talk to daemon" in clock["detail"]
    nothing = probe_system.gather_clock(
        [str(tmp_path / "none")], systemd=False, kernel=lambda: (None, "adjtimex: no")
    )
    assert nothing["synchronized"] is None
    assert nothing["source"] is None
    assert "no timedatectl (with systemd), chronyc or ntpq" in nothing["detail"]


def test_start_clock_runs_timedatectl_while_the_probe_gathers(tmp_path):
    fake = tmp_path / "timedatectl"
    fake.write_text('#!/bin/sh\n[ "$*" = "show -p NTPSynchronized --value" ] && echo no\n')
    fake.chmod(0o755)
    assert probe_system.start_clock([str(tmp_path)], systemd=False) is None
    started = probe_system.start_clock([str(tmp_path)], systemd=True)
    assert started is not None
    clock = probe_system.gather_clock([str(tmp_path)], started=started)
    assert clock == {
        "synchronized": False,
        "source": "timedatectl",
        "detail": "timedatectl: NTPSynchronized=no",
    }


def test_kernel_clock_state_on_this_machine():
    synced, detail = probe_system.kernel_clock_state()
    assert synced in (True, False)
    assert detail.startswith("kernel: ")


def test_clock_command_timeout_is_reported(tmp_path):
    slow = tmp_path / "slow"
    slow.write_text("#!/bin/sh\nsleep 5\n")
    slow.chmod(0o755)
    started = time.monotonic()
    assert probe_system._run([str(slow)], timeout=0.2) == (None, "", "no answer within 0.2 s")
    assert time.monotonic() - started < 3


MOUNTS_V2 = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n"
MOUNTS_HYBRID = """\
tmpfs /sys/fs/cgroup tmpfs ro,nosuid,nodev,noexec,mode=755 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid,nodev,noexec,relatime 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,nodev,noexec,relatime,cpu,cpuacct 0 0
"""


def test_parse_cgroup_mounts():
    assert probe_system.parse_cgroup_mounts(MOUNTS_V2) == {
        "version": 2,
        "layout": "unified",
        "fstype": "cgroup2",
    }
    assert probe_system.parse_cgroup_mounts(MOUNTS_HYBRID)["layout"] == "hybrid"
    legacy = "\n".join(line for line in MOUNTS_HYBRID.splitlines() if "unified" not in line)
    assert probe_system.parse_cgroup_mounts(legacy) == {
        "version": 1,
        "layout": "legacy",
        "fstype": "tmpfs",
    }
    assert probe_system.parse_cgroup_mounts("proc /proc proc rw 0 0\n")["version"] is None


def test_gather_system(tmp_path):
    (tmp_path / "mounts").write_text(MOUNTS_V2)
    (tmp_path / "cpuinfo").write_text(CPUINFO_INTEL.replace("flags", "microcode\t: 0xf0\nflags"))
    errors = []
    found = probe_system.gather_system(
        errors, str(tmp_path / "mounts"), str(tmp_path / "cpuinfo"), clock=lambda: "clock"
    )
    assert found["cgroup"] == {
        "version": 2,
        "layout": "unified",
        "fstype": "cgroup2",
        "error": None,
    }
    assert found["microcode"] == "0xf0"
    assert found["kernel"]["release"] == os.uname().release
    assert found["clock"] == "clock"
    assert errors == []
    missing = probe_system.gather_system(
        errors, str(tmp_path / "none"), str(tmp_path / "none"), clock=lambda: None
    )
    assert missing["cgroup"]["version"] is None
    assert "No such file or directory" in missing["cgroup"]["error"]
    assert missing["microcode"] is None
    assert len(errors) == 2


def test_detect_container(tmp_path):
    assert probe_system.detect_container(str(tmp_path)) is None
    (tmp_path / "run" / "systemd").mkdir(parents=True)
    (tmp_path / "run" / "systemd" / "container").write_text("lxc\n")
    assert probe_system.detect_container(str(tmp_path)) == "lxc"
    (tmp_path / "run" / ".containerenv").write_text("")
    assert probe_system.detect_container(str(tmp_path)) == "podman"


SUDOERS_RULES = """\
# OpenNebula's, as share/sudoers/sudo_commands.rb writes it
Defaults:oneadmin !requiretty
Cmnd_Alias ONE_NET = /usr/sbin/ip link *, /usr/sbin/ip route *, \\
    /sbin/kvmprep-moved, /usr/sbin/sysctl vm.drop_caches\\=3 vm.compact_memory\\=1
Cmnd_Alias ONE_OVS = /usr/bin/ovs-vsctl : ONE_X = !/usr/bin/nowhere, ALL, sudoedit /etc/x
#Cmnd_Alias ONE_OLD = /commented/out
oneadmin ALL=(ALL:ALL) NOPASSWD: ONE_NET, ONE_OVS
"""


def test_parse_cmnd_aliases():
    assert probe_one.parse_cmnd_aliases(SUDOERS_RULES) == [
        ("ONE_NET", "/usr/sbin/ip"),
        ("ONE_NET", "/usr/sbin/ip"),
        ("ONE_NET", "/sbin/kvmprep-moved"),
        ("ONE_NET", "/usr/sbin/sysctl"),
        ("ONE_OVS", "/usr/bin/ovs-vsctl"),
        ("ONE_X", "/usr/bin/nowhere"),
    ]


def test_parse_commands_user_specifications_name_directly():
    text = (
        "Defaults:oneadmin secure_path = /sbin:/bin\n"
        "oneadmin ALL=(ALL : ALL) NOPASSWD: /usr/sbin/kvmprep-lab, ONE_NET, \\\n"
        "    (root) PASSWD: sha256:qL3Z= /usr/bin/digested -y\n"
        "oneadmin ALL=(ALL:ALL) NOPASSWD:SETENV: ONE_NETNS\n"
        "Cmd_Alias ONE_CWD = CWD=/tmp /bin/true\n"
    )
    assert probe_one.parse_cmnd_aliases(text) == [
        ("user oneadmin", "/usr/sbin/kvmprep-lab"),
        ("user oneadmin", "/usr/bin/digested"),
        ("ONE_CWD", "/bin/true"),
    ]


def test_parse_cmnd_aliases_of_kvmprep_own_sudoers_template():
    text = (ROOT / "roles/kvm_host/templates/sudoers-oneadmin.j2").read_text()
    found = dict(probe_one.parse_cmnd_aliases(text))
    assert set(found) == {
        "KVMPREP_ONE_NET",
        "KVMPREP_ONE_OVS",
        "KVMPREP_ONE_LVM",
        "KVMPREP_ONE_MEM",
    }
    assert found["KVMPREP_ONE_MEM"] == "/usr/sbin/sysctl"


def test_gather_sudo_rules(tmp_path):
    bins = tmp_path / "bin"
    bins.mkdir()
    for name in ("ip", "sysctl", "kvmprep-moved"):
        (bins / name).write_text("#!/bin/sh\n")
        (bins / name).chmod(0o755)
    rules = tmp_path / "opennebula"
    rules.write_text(SUDOERS_RULES.replace("/usr/sbin/ip", str(bins / "ip")))
    unreadable = tmp_path / "opennebula-unreadable"
    unreadable.mkdir()  # reading a directory fails: not "absent"
    found = probe_one.gather_sudo_rules(
        [str(rules), str(unreadable), str(tmp_path / "absent")], dirs=[str(bins)]
    )
    assert found["files"][0] == {"path": str(rules), "error": None}
    assert found["files"][1]["path"] == str(unreadable)
    assert found["files"][1]["error"]
    assert len(found["files"]) == 2  # an absent file is ONE-004's business
    by_command = {c["command"]: c for c in found["commands"]}
    assert len(found["commands"]) == len(by_command)  # `ip link *`, `ip route *`: one path
    assert by_command[str(bins / "ip")]["exists"] is True
    moved = by_command["/sbin/kvmprep-moved"]
    assert moved == {
        "file": str(rules),
        "alias": "ONE_NET",
        "command": "/sbin/kvmprep-moved",
        "exists": False,
        "elsewhere": str(bins / "kvmprep-moved"),
    }
    assert by_command["/usr/bin/nowhere"]["elsewhere"] is None


def test_sudo_list_answers_and_failures(monkeypatch):
    def started(script):
        proc = subprocess.Popen(
            ["sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        return proc, time.monotonic() + 2

    assert probe_one.finish_sudo_list(started("echo 'User oneadmin may run'")) == {
        "ok": True,
        "error": None,
    }
    assert probe_one.finish_sudo_list(
        started("echo 'sudo: a password is required' >&2; exit 1")
    ) == {"ok": False, "error": "sudo: a password is required"}
    slow = started("sleep 5")
    slow = (slow[0], time.monotonic() + 0.2)
    assert probe_one.finish_sudo_list(slow) == {
        "ok": False,
        "error": f"no answer within {probe_one.ONE_SUDO_TIMEOUT:g} s",
    }
    # Answered in time, collected after its deadline (the probe was busy gathering the rest,
    # as on a loaded host): an answer, not a hang.
    answered = started("echo 'User oneadmin may run'")
    answered[0].wait()
    time.sleep(0.05)
    assert probe_one.finish_sudo_list((answered[0], time.monotonic() - 1)) == {
        "ok": True,
        "error": None,
    }
    assert probe_one.finish_sudo_list(("needs root", 0)) == {"ok": None, "error": "needs root"}
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(probe_one, "search_dirs", lambda _path: ["/nonexistent"])
    assert probe_one.finish_sudo_list(probe_one.start_sudo_list("oneadmin"))["ok"] is None


def test_parse_and_gather_kvmrc(tmp_path):
    text = (ROOT / "tests/unit/fixtures/one/kvmrc").read_text()
    assert probe_one.parse_kvmrc(text) == {
        "LIBVIRT_URI": "qemu:///system",
        "QEMU_PROTOCOL": "qemu+ssh",
    }
    assert probe_one.parse_kvmrc("MIGRATE_OPTIONS='--unsafe'  # no shared storage\n") == {
        "MIGRATE_OPTIONS": "--unsafe"
    }
    assert probe_one.gather_kvmrc(str(tmp_path)) == {
        "path": str(tmp_path / "etc/vmm/kvm/kvmrc"),
        "exists": False,
        "error": None,
        "qemu_protocol": None,
        "libvirt_uri": None,
        "migrate_options": None,
    }
    old = tmp_path / "vmm" / "kvm"
    old.mkdir(parents=True)
    (old / "kvmrc").write_text("export QEMU_PROTOCOL=qemu+tcp\n")
    found = probe_one.gather_kvmrc(str(tmp_path))
    assert found["path"] == str(old / "kvmrc")
    assert found["qemu_protocol"] == "qemu+tcp"


def test_ansible_end_to_end_system_group(tmp_path):
    result = run_module_locally(
        tmp_path,
        "kvmprep.kvm.kvm_host_probe",
        {"gather": ["system"]},
        "--check",
    )
    assert result.get("failed") is not True, result
    found = result["probe"]["system"]
    assert set(found) == {"clock", "container", "cgroup", "kernel", "microcode"}
    assert set(found["clock"]) == {"synchronized", "source", "detail"}
    assert found["clock"]["source"] in ("timedatectl", "chrony", "ntpd", "kernel", None)
    assert found["cgroup"]["version"] in (1, 2)
    assert found["kernel"]["release"] == os.uname().release


# --- ONE-004's Ruby: without RubyGems first, with them when that fails ------------------------


def _ruby_as_me(tmp_path, monkeypatch, script):
    """A fake ruby on PATH, run as the current user (no runuser), logging its arguments."""
    dirs = _fake_ruby(tmp_path, f'echo "$*" >> {tmp_path}/calls\n{script}')
    monkeypatch.setattr(probe_one, "search_dirs", lambda _path: dirs)
    me = pwd.getpwuid(os.geteuid()).pw_name
    return me, lambda: (tmp_path / "calls").read_text().splitlines()


def test_ruby_loads_without_rubygems_in_one_run(tmp_path, monkeypatch):
    me, calls = _ruby_as_me(tmp_path, monkeypatch, "exit 0\n")
    assert probe_one.finish_ruby_probe(me, probe_one.start_ruby_probe(me)) is None
    assert calls() == [f"--disable-gems -e {probe_one.ONE_RUBY_PROBE}"]


def test_ruby_is_asked_again_with_rubygems_when_the_fast_run_fails(tmp_path, monkeypatch):
    # sqlite3 installed as a gem only: found with RubyGems, not without.
    me, calls = _ruby_as_me(
        tmp_path,
        monkeypatch,
        'case "$1" in --disable-gems) echo "cannot load such file -- sqlite3 (LoadError)" >&2;'
        " exit 1;; esac\nexit 0\n",
    )
    assert probe_one.finish_ruby_probe(me, probe_one.start_ruby_probe(me)) is None
    assert calls() == [
        f"--disable-gems -e {probe_one.ONE_RUBY_PROBE}",
        f"-e {probe_one.ONE_RUBY_PROBE}",
    ]
    # Collected after the first run's deadline (a busy probe): the second run has its own.
    ruby, proc, _deadline = probe_one.start_ruby_probe(me)
    proc.wait()
    assert probe_one.finish_ruby_probe(me, (ruby, proc, time.monotonic() - 1)) is None


def test_ruby_that_did_not_answer_is_not_asked_again(tmp_path, monkeypatch):
    me, calls = _ruby_as_me(tmp_path, monkeypatch, "exec sleep 30\n")
    ruby, proc, _deadline = probe_one.start_ruby_probe(me)
    why = probe_one.finish_ruby_probe(me, (ruby, proc, time.monotonic() + 0.3))
    assert why == f"no answer within {probe_one.ONE_RUBY_TIMEOUT:g} s"
    assert len(calls()) == 1


def test_ruby_failing_both_ways_says_why_the_drivers_way(tmp_path, monkeypatch):
    me, calls = _ruby_as_me(
        tmp_path,
        monkeypatch,
        'echo "<internal:x>:85:in \\`require\': cannot load such file -- sqlite3 (LoadError)"'
        " >&2; exit 1\n",
    )
    why = probe_one.finish_ruby_probe(me, probe_one.start_ruby_probe(me))
    assert why == "cannot load such file -- sqlite3 (LoadError)"
    assert len(calls()) == 2
    # Not installed: nothing is run, and it says so.
    monkeypatch.setattr(probe_one, "search_dirs", lambda _path: [str(tmp_path / "none")])
    assert probe_one.finish_ruby_probe(me, probe_one.start_ruby_probe(me)) == (
        "ruby is not installed"
    )
