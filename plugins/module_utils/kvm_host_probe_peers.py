# -*- coding: utf-8 -*-
"""kvm_host_probe's peers group, and one_frontend_probe's SSH hops: live tests from this machine
to the other machines of its OpenNebula cluster (controls NET-002 and ONE-008).

- Ports: a TCP connect to each peer on each of the given ports (the migration listener's,
  the first port of QEMU's migration range). ``open`` or ``refused`` means the network lets the
  connection through; ``timeout`` (nothing answered: a firewall dropping it) and
  ``unreachable`` (EHOSTUNREACH, ENETUNREACH, or a local rule refusing to send it) mean a
  migration to that peer cannot connect; ``unresolved`` means the name has no address here.
- SSH: ``ssh ... <peer> true`` as oneadmin, in BatchMode (a prompt fails instead of waiting),
  as the drivers hop host -> host, host -> front-end and front-end -> host.

Both start when the probe starts (start_peers) and run while the rest of the probe gathers;
finish_peers waits for them until their deadlines. Every peer has its own thread (the ports),
so a cluster of dead peers costs the ports' deadline once, not once per peer. The hops run
SSH_PARALLEL at a time: every machine of a cluster hops to every other at the same moment, so
without a bound each sshd would be asked by the whole cluster at once (above sshd's
MaxStartups, 10 by default, it drops connections at random: hops that fail only because they
were tested) and the key exchanges would starve the rest of the probe (sudo, Ruby, which have
deadlines of their own). Above PEERS_LIMIT peers nothing is tried (the reason is reported).

The key exchange: where the configured list (``ssh -G``, as the user: its config, the system's
and crypto policies) begins with sntrup761x25519 (OpenSSH 9.0-9.8's default, about ten times
the CPU of curve25519 on both ends), curve25519-sha256 is moved first. The same algorithms are
allowed, in another order: a hop tests oneadmin's trust, which the key exchange does not change.

Read-only: ssh is run with StrictHostKeyChecking=yes and UpdateHostKeys=no, so that it never
writes oneadmin's known_hosts (accept-new, or OpenNebula's "no", would record a key the check
has no business trusting), and without connection sharing (ControlMaster=no,
ControlPath=none), so that an established master of the drivers' cannot answer for a hop that
would fail, and no master is left behind. The environment is minimal: no SSH_AUTH_SOCK of the
Ansible connection's agent can lend its keys to oneadmin.

Standard library only, Python 3.6 syntax: runs on the host.
"""

import errno
import os
import pwd
import socket
import subprocess
import threading
import time

from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_probe_common import (
    BIN_DIRS,
    UNSET,
    communicate_by,
    errtext,
    find_program,
    search_dirs,
)

#: Peers above which nothing is tried (each costs a thread and an ssh process at once).
PEERS_LIMIT = 32
#: Seconds a connect to one port may take (all addresses of the name together).
CONNECT_TIMEOUT = 1.0
#: Seconds finish_peers waits for all the ports of all peers, from start_peers.
PORTS_DEADLINE = 3.0
#: ssh's own ConnectTimeout (the TCP connection), and the deadline of every ssh process from
#: start_peers: key exchange and authentication come after the connection.
SSH_CONNECT_TIMEOUT = 3
SSH_DEADLINE = 6.0
#: Hops in flight at once, and the seconds all of them together may take from start_peers (a
#: hop not started by then is not tried: the control says so).
SSH_PARALLEL = 4
SSH_BUDGET = 12.0
#: Seconds ``ssh -G`` may take to say the configured key exchanges.
KEX_TIMEOUT = 2.0
#: Seconds the hops wait at most for the probe's other children (``hold``) to end.
HOLD = 2.0
#: The key exchanges a hop prefers to a configured list that begins with sntrup761x25519.
FAST_KEX = ("curve25519-sha256", "curve25519-sha256@libssh.org")
#: The errors of a connect that mean the network did not let it through (a router's ICMP
#: unreachable, no route, a local rule refusing to send).
UNREACHABLE = (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES, errno.EPERM)
SSH_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def ssh_args(ssh, address, kex=None):
    """The command line of one hop: BatchMode as the drivers, read-only, no sharing; ``kex``:
    the key exchange list to ask for (None: the configured one)."""
    return [
        ssh,
        *(["-o", "KexAlgorithms=" + kex] if kex else []),
        "-o", "BatchMode=yes",
        "-o", "ConnectTimeout=%d" % SSH_CONNECT_TIMEOUT,
        "-o", "StrictHostKeyChecking=yes",
        "-o", "UpdateHostKeys=no",
        "-o", "ControlMaster=no",
        "-o", "ControlPath=none",
        "-a",  # no agent forwarding
        "-x",
        "-T",
        address,
        "true",
    ]  # fmt: skip


def preferred_kex(configured):
    """The kex list of ``ssh -G``'s output with curve25519 first when it begins with sntrup761
    (None: keep the configured one)."""
    for line in configured.splitlines():
        key, _sep, value = line.strip().partition(" ")
        if key.lower() != "kexalgorithms":
            continue
        names = [n for n in value.strip().split(",") if n]
        fast = [n for n in names if n in FAST_KEX]
        if not names or not fast or not names[0].startswith("sntrup761"):
            return None
        return ",".join(fast + [n for n in names if n not in fast])
    return None


def resolve(address, getaddrinfo=socket.getaddrinfo):
    """(getaddrinfo's TCP entries for address, None), or (None, why it has no address)."""
    try:
        infos = getaddrinfo(address, None, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError) as exc:
        return None, errtext(exc) if isinstance(exc, OSError) else str(exc)
    return (infos, None) if infos else (None, "no address")


def connect_to(infos, port, timeout=CONNECT_TIMEOUT, new=socket.socket):
    """{state, address, error} of a TCP connect to port at the addresses of ``infos``, in
    getaddrinfo's order (as libvirt and QEMU try them), all within ``timeout`` seconds."""
    res = {"state": "timeout", "address": None, "error": "no answer within %g s" % timeout}
    deadline = time.monotonic() + timeout
    for family, kind, proto, _name, sockaddr in infos:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        res["address"] = sockaddr[0]
        sock = new(family, kind, proto)
        sock.settimeout(left)
        try:
            sock.connect((sockaddr[0], int(port), *sockaddr[2:]))
            res.update(state="open", error=None)
            return res
        except socket.timeout:
            res.update(state="timeout", error="no answer within %g s" % timeout)
        except OSError as exc:
            if exc.errno == errno.ECONNREFUSED:
                # A RST: the peer's kernel answered, nothing listens there.
                res.update(state="refused", error=errtext(exc))
                return res
            res.update(
                state="unreachable" if exc.errno in UNREACHABLE else "error",
                error=errtext(exc),
            )
        finally:
            sock.close()
    return res


def connect(
    address, port, timeout=CONNECT_TIMEOUT, getaddrinfo=socket.getaddrinfo, new=socket.socket
):
    """connect_to address's addresses, or state C(unresolved) with why it has none."""
    infos, why = resolve(address, getaddrinfo)
    if infos is None:
        return {"state": "unresolved", "address": None, "error": why}
    return connect_to(infos, port, timeout, new)


def _last_line(data):
    lines = [x.strip() for x in data.decode("utf-8", "replace").splitlines() if x.strip()]
    return lines[-1] if lines else ""


class Peers(object):
    """What start_peers started: the port threads and the ssh processes, with their results."""

    def __init__(self, ports, skipped=None, ssh_skipped=None):
        self.ports = [int(p) for p in ports]
        self.skipped = skipped
        self.ssh_skipped = ssh_skipped
        self.started = time.monotonic()
        self.hosts = {}  # name -> the peer's entry
        self.frontend = None
        self.hops = []  # the entries whose hop no worker has started yet
        self.running = {}  # id(entry) -> (entry, Popen) of the hops in flight
        self.workers = []
        self.hop_with = None  # (user, home, ssh, start, deadline) of every hop
        self.kex = UNSET
        self.hops_closed = False
        self.kex_lock = threading.Lock()
        self.hold = []
        self.threads = []
        self.resolved = set()  # id() of the entries whose name has been looked up
        self.closed = False
        self.lock = threading.Lock()

    def _ports_of(self, entry, resolve_fn, connect_fn):
        # Resolved once for all the ports: a name that takes long to resolve is reported as
        # such, not as a port that timed out.
        infos, why = resolve_fn(entry["address"])
        with self.lock:
            self.resolved.add(id(entry))
        for port in self.ports:
            if infos is None:
                result = {"state": "unresolved", "address": None, "error": why}
            else:
                result = connect_fn(infos, port)
            with self.lock:
                if self.closed:
                    return  # too late: the fact is out, and must not change under its reader
                entry["ports"][str(port)] = result

    def start_ports(self, entry, resolve_fn, connect_fn):
        entry["ports"] = {}
        thread = threading.Thread(target=self._ports_of, args=(entry, resolve_fn, connect_fn))
        thread.daemon = True  # a getaddrinfo that never answers ends with the process
        thread.start()
        self.threads.append((entry, thread))

    def start_hops(self, targets, hop_with, parallel=SSH_PARALLEL, hold=()):
        self.hops = list(targets)
        self.hop_with = hop_with
        self.hold = [p for p in hold if isinstance(p, subprocess.Popen)]
        for _n in range(min(parallel, len(self.hops))):
            worker = threading.Thread(target=self._hop_worker)
            worker.daemon = True
            worker.start()
            self.workers.append(worker)

    def _kex(self):
        """The key exchange list of every hop, asked once (``ssh -G`` of the first target)."""
        user, home, ssh, start, _deadline = self.hop_with
        with self.kex_lock:
            if self.kex is UNSET:
                _wait_for(self.hold, HOLD)
                first = next(
                    (e["address"] for e in self.hops if not e["address"].startswith("-")), ""
                )
                self.kex = None
                proc = (
                    start(user, home, [ssh, "-G", first], stdout=subprocess.PIPE) if first else None
                )
                if isinstance(proc, subprocess.Popen):
                    try:
                        out, _err = proc.communicate(timeout=KEX_TIMEOUT)
                        self.kex = preferred_kex(out.decode("utf-8", "replace"))
                    except subprocess.TimeoutExpired:
                        _stop(proc)
            return self.kex

    def _hop_worker(self):
        user, home, ssh, start, deadline = self.hop_with
        kex = self._kex()
        while True:
            with self.lock:
                if self.hops_closed or not self.hops:
                    return
                entry = self.hops.pop(0)
                if entry["address"].startswith("-"):
                    proc = "%r is not a host name" % entry["address"]  # not an ssh option
                else:
                    proc = start(user, home, ssh_args(ssh, entry["address"], kex))
                if isinstance(proc, subprocess.Popen):
                    self.running[id(entry)] = (entry, proc)
            result = _finish_ssh(proc, time.monotonic() + deadline, deadline)
            with self.lock:
                self.running.pop(id(entry), None)
                if not self.hops_closed:
                    entry["ssh"] = result

    def _close_hops(self, ssh_budget):
        for worker in self.workers:
            worker.join(max(0.0, self.started + ssh_budget - time.monotonic()))
        with self.lock:
            self.hops_closed = True  # no hop starts any more, none writes its result
            late = list(self.running.values())
        for entry, proc in late:
            entry["ssh"] = {
                "ok": False,
                "rc": None,
                "message": "no answer within the %g s of all hops" % ssh_budget,
            }
            proc.terminate()  # the worker waiting on it collects it
        for worker in self.workers:
            worker.join(1.0)
        for _entry, proc in late:
            if proc.poll() is None:
                proc.kill()

    def finish(self, ports_deadline=PORTS_DEADLINE, ssh_budget=SSH_BUDGET):
        for _entry, thread in self.threads:
            thread.join(max(0.0, self.started + ports_deadline - time.monotonic()))
        with self.lock:
            self.closed = True
            late = "no answer within %g s" % ports_deadline
            for entry, _thread in self.threads:
                done = dict(entry["ports"])
                state = "timeout" if id(entry) in self.resolved else "unresolved"
                entry["ports"] = {
                    str(p): done.get(str(p)) or {"state": state, "address": None, "error": late}
                    for p in self.ports
                }
        self._close_hops(ssh_budget)
        return {
            "ports": self.ports,
            "skipped": self.skipped,
            "ssh_skipped": self.ssh_skipped,
            "hosts": self.hosts,
            "frontend": self.frontend,
        }


def _wait_for(procs, limit):
    """Until every process of procs has ended, or limit seconds have passed."""
    end = time.monotonic() + limit
    while time.monotonic() < end and any(p.poll() is None for p in procs):
        time.sleep(0.01)


def _stop(proc):
    """End a hop that did not answer. SIGTERM first: runuser's watching parent passes it on to
    ssh, which runs in a session of its own (a SIGKILL would leave ssh behind, holding the
    pipe); never waits more than a second for either."""
    for signal_it in (proc.terminate, proc.kill):
        signal_it()
        try:
            proc.communicate(timeout=1.0)
            return
        except subprocess.TimeoutExpired:
            continue


def _finish_ssh(proc, deadline, limit):
    if not isinstance(proc, subprocess.Popen):
        return {"ok": False, "rc": None, "message": proc}
    try:
        _out, err = communicate_by(proc, deadline)
    except subprocess.TimeoutExpired:
        if proc.poll() is None:
            _stop(proc)
            return {"ok": False, "rc": None, "message": "no answer within %g s" % limit}
        # It ended as its deadline passed.
        try:
            _out, err = proc.communicate(timeout=1.0)
        except subprocess.TimeoutExpired:
            err = b""  # something it started still holds its stderr
    return {"ok": proc.returncode == 0, "rc": proc.returncode, "message": _last_line(err)}


def ssh_skip(user, dirs=None, euid=None):
    """(None, ssh's path, user's home) when the hops can run as user, else ({kind, message},
    None, None): kind C(user) (no such account), C(ssh) (no ssh client), C(root) (this
    process can run nothing as user)."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return {"kind": "user", "message": "no user %s" % user}, None, None
    ssh = find_program("ssh", dirs if dirs is not None else search_dirs(os.environ.get("PATH")))
    if ssh is None:
        return {"kind": "ssh", "message": "ssh is not installed"}, None, None
    euid = os.geteuid() if euid is None else euid
    if euid not in (0, entry.pw_uid):
        return (
            {"kind": "root", "message": "needs root (or %s) to run ssh as %s" % (user, user)},
            None,
            None,
        )
    return None, ssh, entry.pw_dir


def start_ssh(user, home, args, euid=None, stdout=subprocess.DEVNULL):
    """ssh started as user with a minimal environment: a Popen, or why it could not start."""
    euid = os.geteuid() if euid is None else euid
    try:
        mine = pwd.getpwuid(euid).pw_name
    except KeyError:
        mine = None
    if mine != user:
        # runuser: user's uid, gid and supplementary groups; ssh finds ~/.ssh from the
        # password database (its known_hosts, identity and config), not from HOME.
        runuser = find_program("runuser", BIN_DIRS)
        if runuser is None:
            return "runuser is not installed (needed to run ssh as %s)" % user
        args = [runuser, "-u", user, "--", *list(args)]
    env = {"PATH": SSH_PATH, "LC_ALL": "C", "HOME": home or "/", "USER": user, "LOGNAME": user}
    try:
        return subprocess.Popen(  # pylint: disable=ansible-bad-function
            args,
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
    except OSError as exc:
        return errtext(exc)


def start_peers(
    peers,
    ports=(),
    frontend="",
    user="oneadmin",
    limit=PEERS_LIMIT,
    connect_fn=connect_to,
    resolve_fn=resolve,
    skip=ssh_skip,
    start=start_ssh,
    ssh_deadline=SSH_DEADLINE,
    parallel=SSH_PARALLEL,
    hold=(),
):
    """Start the port tests and the SSH hops to ``peers`` (``{name, address}``: the address is
    the name OpenNebula uses, which the drivers and libvirt connect to) and the SSH hop to
    ``frontend`` ("": none); finish_peers gives the results. The hops begin once the processes
    of ``hold`` have ended (HOLD seconds at most): the probe's other children, which have
    deadlines of their own, are not slowed by the key exchanges of the whole cluster."""
    peers = [p for p in peers or [] if p.get("name")]
    if len(peers) > limit:
        why = "%d peers, more than %d: not tested" % (len(peers), limit)
        return Peers(ports, skipped=why)
    skipped, ssh, home = skip(user) if peers or frontend else (None, None, None)
    started = Peers(ports, ssh_skipped=skipped)
    targets = []
    for peer in peers:
        address = peer.get("address") or peer["name"]
        entry = {"address": address, "ports": {}, "ssh": None}
        started.hosts[peer["name"]] = entry
        if started.ports:
            started.start_ports(entry, resolve_fn, connect_fn)
        targets.append(entry)
    if frontend:
        started.frontend = {"name": frontend, "address": frontend, "ssh": None}
        targets.append(started.frontend)
    if skipped is None:
        started.start_hops(targets, (user, home, ssh, start, ssh_deadline), parallel, hold)
    return started


def finish_peers(started, ports_deadline=PORTS_DEADLINE, ssh_budget=SSH_BUDGET):
    """The peers fact: C(ports), C(skipped) (why nothing was tried), C(ssh_skipped) (why no
    hop was: C(kind) and C(message)), C(hosts) (per peer name, C(address), C(ports) (per port,
    C(state), C(address) tried last, C(error)) and C(ssh) (C(ok), C(rc), C(message): ssh's
    last line on stderr)) and C(frontend) (C(name), C(address), C(ssh)) or null."""
    return started.finish(ports_deadline, ssh_budget)
