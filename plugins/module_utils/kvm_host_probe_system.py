# -*- coding: utf-8 -*-
"""kvm_host_probe's system group: what hosts of a cluster must share besides QEMU and libvirt
(clock synchronisation, cgroup layout, kernel release, CPU microcode).

Standard library only, Python 3.6 syntax: runs on the host.
"""

import ctypes
import ctypes.util
import os

from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_probe_common import (
    find_program,
    read_text_why,
    search_dirs,
    start,
)

CLOCK_TIMEOUT = 3.0  # each clock command; chronyc and ntpq wait for their daemon
CGROUP_MOUNT = "/sys/fs/cgroup"
# adjtimex(2): the kernel's own flag that no time daemon keeps the clock in step.
STA_UNSYNC = 0x0040
TIME_ERROR = 5


def _run(args, timeout=CLOCK_TIMEOUT):
    """(rc, stdout, stderr) of a short command; rc None and the reason when it cannot run."""
    # Not AnsibleModule.run_command: it has no timeout, and a hung chronyc must not hang check.
    return start(args, timeout=timeout).outcome()


def _first_line(text):
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[0] if lines else ""


def parse_chronyc_tracking(text):
    """(synchronized, detail) from `chronyc tracking`: its Leap status line."""
    for line in (text or "").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "Leap status":
            value = value.strip()
            return value != "Not synchronised", "chrony: leap status %s" % value
    return None, "chronyc tracking printed no leap status"


def parse_ntpq_peers(text):
    """(synchronized, detail) from `ntpq -pn`: a peer marked '*' is the one ntpd follows."""
    peers = [line for line in (text or "").splitlines()[2:] if line.strip()]
    chosen = [line.split()[0][1:] for line in peers if line.startswith("*")]
    if chosen:
        return True, "ntpd: following %s" % chosen[0]
    return False, "ntpd: no system peer among %d peer(s)" % len(peers)


class _Timex(ctypes.Structure):
    # The leading fields of struct timex (the same layout on every Linux ABI: C alignment),
    # then room for the rest the kernel writes.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("rest", ctypes.c_char * 512),
    ]


def kernel_clock_state():
    """(synchronized, detail) from adjtimex(2) with no mode set (reads only, any user, also
    in a container: the clock is the host's); (None, why) when it cannot be called."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        timex = _Timex()
        state = libc.adjtimex(ctypes.byref(timex))
    except (OSError, AttributeError) as exc:
        return None, "adjtimex: %s" % exc
    if state < 0:
        return None, "adjtimex: %s" % os.strerror(ctypes.get_errno())
    unsync = bool(timex.status & STA_UNSYNC) or state == TIME_ERROR
    return not unsync, "kernel: %s, max error %d us" % (
        "unsynchronised (no time daemon sets it)" if unsync else "synchronised",
        timex.maxerror,
    )


def _timedatectl(dirs, systemd):
    """The command asking timedatectl, where systemd runs; else None."""
    systemd = os.path.isdir("/run/systemd/system") if systemd is None else systemd
    timedatectl = find_program("timedatectl", dirs) if systemd else None
    return [timedatectl, "show", "-p", "NTPSynchronized", "--value"] if timedatectl else None


def start_clock(dirs=None, systemd=None):
    """Start timedatectl now (it asks systemd-timedated over D-Bus) so that it answers while
    the rest of the probe gathers: a function giving its (rc, stdout, stderr), or None."""
    dirs = dirs if dirs is not None else search_dirs(os.environ.get("PATH"))
    args = _timedatectl(dirs, systemd)
    if args is None:
        return None
    call = start(args, timeout=CLOCK_TIMEOUT)

    def finish():
        return call.outcome()

    finish.proc = call.proc  # for what waits on it ending (the peers' hops)
    return finish


def gather_clock(dirs=None, systemd=None, kernel=kernel_clock_state, run=_run, started=None):
    """{synchronized, source, detail}: timedatectl where systemd runs, else chrony's or ntpd's
    own report, else the kernel's flag; ``detail`` says why when nothing can tell. ``started``
    is start_clock's, when timedatectl was started earlier."""
    dirs = dirs if dirs is not None else search_dirs(os.environ.get("PATH"))
    tried = []
    args = None if started is not None else _timedatectl(dirs, systemd)
    if started is not None or args is not None:
        rc, out, err = started() if started is not None else run(args)
        value = out.strip()
        if rc == 0 and value in ("yes", "no"):
            return {
                "synchronized": value == "yes",
                "source": "timedatectl",
                "detail": "timedatectl: NTPSynchronized=%s" % value,
            }
        tried.append("timedatectl: %s" % (_first_line(err) or "exit status %s" % rc))
    chronyc = find_program("chronyc", dirs)
    if chronyc:
        rc, out, err = run([chronyc, "-n", "tracking"])
        if rc == 0:
            synced, detail = parse_chronyc_tracking(out)
            if synced is not None:
                return {"synchronized": synced, "source": "chrony", "detail": detail}
        tried.append("chronyc: %s" % (_first_line(err) or _first_line(out) or rc))
    ntpq = find_program("ntpq", dirs)
    if ntpq:
        rc, out, err = run([ntpq, "-pn"])
        if rc == 0 and len(out.splitlines()) > 2:
            synced, detail = parse_ntpq_peers(out)
            return {"synchronized": synced, "source": "ntpd", "detail": detail}
        tried.append("ntpq: %s" % (_first_line(err) or _first_line(out) or rc))
    synced, detail = kernel()
    if not tried:
        tried.append("no timedatectl (with systemd), chronyc or ntpq")
    return {
        "synchronized": synced,
        "source": "kernel" if synced is not None else None,
        "detail": "; ".join([*tried, detail]),
    }


def parse_cgroup_mounts(text, mount=CGROUP_MOUNT):
    """{version, layout, fstype}: cgroup2 mounted on /sys/fs/cgroup is the unified layout
    (v2); a tmpfs there with controllers below is v1 (hybrid when it also holds the v2
    unified tree)."""
    types = {}
    for line in (text or "").splitlines():
        fields = line.split()
        if len(fields) >= 3:
            # A later mount over the same point hides the earlier one.
            types[fields[1].replace("\\040", " ")] = fields[2]
    fstype = types.get(mount)
    if fstype == "cgroup2":
        return {"version": 2, "layout": "unified", "fstype": fstype}
    below = [t for point, t in types.items() if point.startswith(mount + "/")]
    if fstype is not None and "cgroup" in below:
        hybrid = "cgroup2" in below
        return {"version": 1, "layout": "hybrid" if hybrid else "legacy", "fstype": fstype}
    return {"version": None, "layout": None, "fstype": fstype}


def parse_microcode(text):
    """The microcode revision of the first CPU of /proc/cpuinfo, or None (VMs often lack it)."""
    for line in (text or "").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "microcode":
            return value.strip() or None
        if not line.strip():
            break  # the first CPU's block ended
    return None


def detect_container(root="/"):
    """The container manager the host runs in (its clock is then the machine's), else None:
    podman's /run/.containerenv, docker's /.dockerenv, systemd's /run/systemd/container."""
    if os.path.exists(os.path.join(root, "run/.containerenv")):
        return "podman"
    if os.path.exists(os.path.join(root, ".dockerenv")):
        return "docker"
    text, _why = read_text_why(os.path.join(root, "run/systemd/container"))
    return (text or "").strip() or None


def gather_system(errors, mounts="/proc/mounts", cpuinfo="/proc/cpuinfo", clock=gather_clock):
    text, why = read_text_why(mounts)
    cgroup = parse_cgroup_mounts(text)
    cgroup["error"] = None if text is not None else "%s: %s" % (mounts, why)
    if text is not None and cgroup["version"] is None:
        cgroup["error"] = "no cgroup file system mounted on %s" % CGROUP_MOUNT
    if text is None:
        errors.append(cgroup["error"])
    info, why = read_text_why(cpuinfo)
    if info is None:
        errors.append("%s: %s" % (cpuinfo, why))
    return {
        "clock": clock(),
        "container": detect_container(),
        "cgroup": cgroup,
        "kernel": {"release": os.uname()[2]},
        "microcode": parse_microcode(info),
    }
