# -*- coding: utf-8 -*-
"""kvm_host_probe's qemu group: the emulator OpenNebula starts, what it can run, and the host
CPU (what decides live migration).
"""

import hashlib
import os
import re
import subprocess
import time
import xml.etree.ElementTree as ET

from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_probe_common import (
    communicate_by,
    errtext,
    read_text,
    read_text_why,
    search_dirs,
)

ONE_EMULATOR = "/usr/bin/qemu-kvm-one"  # kvm_host_probe's emulator default
# uname's machine -> the suffix of the distribution's qemu-system-* binary.
QEMU_ARCH = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "i386": "i386",
    "i686": "i386",
    "aarch64": "aarch64",
    "arm64": "aarch64",
    "ppc64le": "ppc64",
    "ppc64": "ppc64",
    "s390x": "s390x",
    "riscv64": "riscv64",
}
QEMU_TIMEOUT = 10.0
# libvirt keeps what it learnt from each QEMU binary in <sha256 of the binary's path>.xml.
LIBVIRT_QEMU_CAPS = "/var/cache/libvirt/qemu/capabilities"
# CPU definitions that are not a model a VM can be given by name.
NOT_CPU_MODELS = ("host", "max", "base")
_MACHINE_TAG = re.compile(r"\s*\((default|deprecated|alias of (\S+))\)$")
_QEMU_VERSION = re.compile(r"QEMU emulator version (\d+(?:\.\d+)+)(?:\s+\(([^)]*)\))?")


def parse_machine_help(text):
    """``<emulator> -machine help`` -> {"types", "default", "aliases", "deprecated"}, or None.

    Lines are ``NAME  DESCRIPTION[ (default)][ (deprecated)]`` or ``ALIAS  DESCRIPTION (alias
    of NAME)``. An alias may be listed more than once (Ubuntu 24.04's q35 names pc-q35-noble
    and pc-q35-8.2): every target is kept, in the printed order.
    """
    machines = _new_machines()
    for line in (text or "").splitlines():
        fields = line.split(None, 1)
        if len(fields) != 2 or line[:1].isspace() or line.rstrip().endswith(":"):
            continue  # the "Supported machines are:" header, blank lines
        name, rest = fields
        tags, target = _machine_tags(rest)
        _add_machine(machines, name, target, "default" in tags, "deprecated" in tags)
    return machines if machines["types"] else None


def _new_machines():
    return {"types": [], "default": None, "aliases": {}, "deprecated": []}


def _add_machine(machines, name, alias_of, default, deprecated):
    if alias_of is not None:
        machines["aliases"].setdefault(name, []).append(alias_of)
        return
    machines["types"].append(name)
    if default:
        machines["default"] = name
    if deprecated:
        machines["deprecated"].append(name)


def _machine_tags(rest):
    """(tags, alias target) from the trailing "(...)" of a machine line, right to left."""
    tags, target = [], None
    while True:
        m = _MACHINE_TAG.search(rest)
        if m is None:
            return tags, target
        tags.append(m.group(1))
        target = m.group(2) or target
        rest = rest[: m.start()]


def parse_qemu_version(text):
    """'QEMU emulator version 10.0.13 (Debian 1:10.0.13+ds-0+deb13u1)' -> (version, package)."""
    m = _QEMU_VERSION.search(text or "")
    return (m.group(1), m.group(2) or None) if m else (None, None)


def parse_qemu_caps(text):
    """libvirt's cached capabilities of one QEMU binary (its <qemuCaps> document): the binary
    and its ctime when probed, the kernel it was probed under, version, package, machine types
    (as from -machine help) and the CPU models usable with KVM (None when it found none). All
    None when the text is not such a document."""
    try:
        root = ET.fromstring(text or "")
    except ET.ParseError:
        root = None
    if root is None or root.tag != "qemuCaps":
        root = ET.Element("qemuCaps")
    number = _xml_value(root, "version")
    version = None
    if number and number.isdigit():
        n = int(number)
        version = "%d.%d.%d" % (n // 1000000, n // 1000 % 1000, n % 1000)
    return {
        "emulator": _xml_value(root, "emulator"),
        "qemuctime": _xml_value(root, "qemuctime"),
        "kernel": _xml_value(root, "kernelVersion"),
        "version": version,
        "package": _xml_value(root, "package") or None,
        "machines": _cached_machines(root),
        "cpu_models": _cached_cpu_models(root),
    }


def _xml_value(root, tag):
    value = root.findtext(tag)
    return value.strip() if value is not None else None


def _entries(root, tag, kind):
    """The attributes of each <tag> element, those probed with KVM (else with TCG: no KVM
    then)."""
    found = [dict(element.attrib) for element in root.findall(tag)]
    for accel in ("kvm", "tcg"):
        chosen = [e for e in found if e.get("type", accel) == accel and "name" in e]
        if chosen or kind == "cpu":
            return chosen
    return []


def _cached_machines(root):
    machines = _new_machines()
    for entry in _entries(root, "machine", "machine"):
        name = entry["name"]
        _add_machine(
            machines, name, None, entry.get("default") == "yes", entry.get("deprecated") == "yes"
        )
        if entry.get("alias"):
            _add_machine(machines, entry["alias"], name, False, False)
    return machines if machines["types"] else None


def _cached_cpu_models(root):
    models = [e for e in _entries(root, "cpu", "cpu") if e["name"] not in NOT_CPU_MODELS]
    return sorted(e["name"] for e in models if e.get("usable") == "yes") if models else None


def parse_cpu_identity(text):
    """Vendor, model name, family/model/stepping and flags of the first CPU of /proc/cpuinfo."""
    found = {}
    for line in (text or "").splitlines():
        name, sep, value = line.partition(":")
        if not sep:
            if found:
                break  # the end of the first processor's block
            continue
        found.setdefault(name.strip(), value.strip())
    flags = found.get("flags")
    return {
        "vendor": found.get("vendor_id") or None,
        "model_name": found.get("model name") or None,
        "family": found.get("cpu family") or None,
        "model": found.get("model") or None,
        "stepping": found.get("stepping") or None,
        "flags": sorted(set(flags.split())) if flags else [],
    }


def _runnable(path):
    return os.path.isfile(path) and os.access(path, os.X_OK)


def choose_emulator(one_path, arch, dirs, runnable=_runnable):
    """The QEMU binary OpenNebula starts: its default path when that runs, else the
    distribution's. A dangling qemu-kvm-one counts as absent (ONE-005 judges it)."""
    res = {
        "path": None,
        "source": None,
        "resolved": None,
        "opennebula_path": one_path,
        "opennebula_present": runnable(one_path),
    }
    if res["opennebula_present"]:
        res.update(path=one_path, source="opennebula")
    else:
        names = ("qemu-system-" + QEMU_ARCH.get(arch, arch), "qemu-kvm")
        found = [os.path.join(d, n) for n in names for d in dirs if runnable(os.path.join(d, n))]
        if found:
            res.update(path=found[0], source="distribution")
    if res["path"]:
        res["resolved"] = os.path.realpath(res["path"])
    return res


def run_parallel(commands, timeout=QEMU_TIMEOUT):
    """[(rc, stdout, why)] of commands run at the same time; a command that cannot start or
    outlives timeout gets rc None and the reason."""
    env = dict(os.environ, LC_ALL="C")
    procs = []
    for args in commands:
        try:
            procs.append(
                # Not AnsibleModule.run_command: that runs one command at a time.
                subprocess.Popen(  # pylint: disable=ansible-bad-function
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=env,
                    close_fds=True,
                )
            )
        except OSError as exc:
            procs.append(errtext(exc))
    deadline = time.monotonic() + timeout
    return [_collect(p, deadline, timeout) for p in procs]


def _collect(proc, deadline, timeout):
    if not isinstance(proc, subprocess.Popen):
        return None, "", proc
    try:
        out, err = communicate_by(proc, deadline)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None, "", "no answer within %g s" % timeout
    lines = err.decode("utf-8", "replace").strip().splitlines()
    why = lines[-1] if lines else "exit status %d" % proc.returncode
    return proc.returncode, out.decode("utf-8", "replace"), why


def libvirt_caps(paths, cache_dir=LIBVIRT_QEMU_CAPS, errors=None):
    """(parsed cache, None) for the first of paths libvirt has probed, else (None, why)."""
    for path in paths:
        source = os.path.join(cache_dir, hashlib.sha256(path.encode()).hexdigest() + ".xml")
        text, why = read_text_why(source)
        if text is not None:
            caps = parse_qemu_caps(text)
            caps["source"] = source
            return caps, None
        if os.path.exists(source):
            if errors is not None:
                errors.append("%s: %s" % (source, why))
            return None, "%s: %s" % (source, why)
    return None, "libvirt has not probed %s yet" % paths[-1]


def _ctime(path):
    try:
        return str(int(os.stat(path).st_ctime))
    except OSError:
        return None


def _from_emulator(path):
    """Version, package and machine types by running the emulator, twice at once."""
    (vrc, vout, vwhy), (mrc, mout, mwhy) = run_parallel(
        [[path, "--version"], [path, "-machine", "help"]]
    )
    version, package = parse_qemu_version(vout) if vrc == 0 else (None, None)
    machines = parse_machine_help(mout) if mrc == 0 else None
    problems = []
    if version is None:
        problems.append("%s --version: %s" % (path, vwhy if vrc != 0 else "no version"))
    if machines is None:
        problems.append("%s -machine help: %s" % (path, mwhy if mrc != 0 else "no machine type"))
    return version, package, machines, problems


def trusted_caps(emulator, cache_dir=LIBVIRT_QEMU_CAPS, errors=None):
    """(libvirt's cached capabilities of the emulator, None) when libvirt would use them as
    they are (the binary did not change since), else (None, why not)."""
    path, resolved = emulator["path"], emulator["resolved"]
    paths = [path] if resolved == path else [path, resolved]
    caps, why = libvirt_caps(paths, cache_dir, errors)
    if caps is None:
        return None, why
    if caps["emulator"] not in paths:
        return None, "%s describes %s" % (caps["source"], caps["emulator"])
    if caps["qemuctime"] != _ctime(resolved):
        return None, "QEMU changed since libvirt probed it"
    return caps, None


def cpu_models(caps, why, kernel):
    """{"usable", "source", "error"}: the named CPU models KVM runs here, as libvirt found."""
    if caps is None:
        return {"usable": None, "source": None, "error": why}
    # Which models KVM can run depends on the kernel too (machine types do not).
    if caps["kernel"] != kernel:
        why = "libvirt probed QEMU under another kernel"
    elif not caps["cpu_models"]:
        why = "libvirt cached no usable KVM CPU model"
    usable = None if why else caps["cpu_models"]
    return {"usable": usable, "source": caps["source"], "error": why}


def gather_qemu(
    version=None,
    one_path=ONE_EMULATOR,
    cpuinfo_path="/proc/cpuinfo",
    cache_dir=LIBVIRT_QEMU_CAPS,
    errors=None,
):
    """What decides whether a VM started here runs on another host: the emulator, its version
    and machine types, the CPU and the CPU models KVM can run, and the libvirt version.

    libvirt's cache of the emulator's capabilities answers first, when libvirt itself would
    still use it: it holds the machine types of ``-machine help`` (the list libvirt resolves
    q35 with), the version and the usable CPU models, for the cost of reading one file.
    Otherwise QEMU is run (a few 10 ms each, 100-300 ms on a busy host). Not ``virsh
    domcapabilities``: a read-only connection may not call it, and a read-write virsh spends
    about 1 s on Debian 12.
    """
    uname = os.uname()
    emulator = choose_emulator(one_path, uname[4], search_dirs(os.environ.get("PATH")))
    res = {
        "emulator": emulator,
        "source": None,
        "version": None,
        "package": None,
        "machines": None,
        "error": None,
        "libvirt_version": version,
        "cpu": parse_cpu_identity(read_text(cpuinfo_path)),
    }
    if emulator["path"] is None:
        arch = QEMU_ARCH.get(uname[4], uname[4])
        res["error"] = "no QEMU emulator: %s absent, no qemu-system-%s or qemu-kvm" % (
            one_path,
            arch,
        )
        res["cpu"]["models"] = cpu_models(None, res["error"], None)
        return res
    caps, why = trusted_caps(emulator, cache_dir, errors)
    res["cpu"]["models"] = cpu_models(caps, why, "%s %s" % uname[2:4])
    if caps is not None:
        res.update(source="libvirt", version=caps["version"], package=caps["package"])
        res["machines"] = caps["machines"]
    if res["machines"] is None or res["version"] is None:
        version_, package, machines, problems = _from_emulator(emulator["path"])
        res.update(source="emulator", version=version_, package=package, machines=machines)
        res["error"] = "; ".join(problems) or None
        if errors is not None:
            errors.extend(problems)
    return res
