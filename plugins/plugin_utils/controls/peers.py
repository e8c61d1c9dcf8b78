"""NET-002 and ONE-008: live tests between the machines of a cluster.

Each kvm host's probe is given the other hosts of its cluster (check.yml groups them by
one_frontend_cluster, as migration.by_cluster does) at the names OpenNebula knows them by,
and tests from there, in the same single call (kvm_host_probe's ``peers`` group):

- NET-002: a TCP connect to each peer on the migration listener's port (16509 tcp, 16514 tls)
  and on the first port of QEMU's migration range (49152). ``open`` and ``refused`` both mean
  the network lets the connection through; ``timeout`` (a firewall dropping it) and
  ``unreachable`` (ICMP unreachable, no route, a local rule) mean a live migration to that
  peer cannot connect. A listener's port refused means the peer's libvirt does not listen
  (LV-005 judges that on the peer), unless the peer's own probe shows it listening on that port
  on a non-loopback address: then something between them rejects the connection (a firewall's
  REJECT, or a listener bound to another address than the one the name resolves to), and the
  migration fails as with a timeout. A REJECT on QEMU's port, where nothing listens between
  migrations, answers as a closed port does: no connect can tell them apart.
- ONE-008: ``ssh <peer> true`` as oneadmin in BatchMode to each peer and to the front-end;
  the front-end's probe makes the hop front-end -> host to every host.

Each host's row names the failing pairs it is part of, either way: a firewall on a host shows as
the other hosts' connections to it timing out, so the host whose rule it is FAILs too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.kvmprep.kvm.plugins.plugin_utils import audit_args
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.libvirt import is_loopback
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import HostFacts, Result
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.opennebula import (
    frontend_of,
    kvm_hosts,
)

#: The migration listener's ports (libvirt's tcp and tls); the other port tested is the first
#: of QEMU's migration range, where nothing listens between migrations.
LISTENER_PORTS = tuple(str(p) for p in audit_args.LISTENER_PORTS.values())
FILTERED = ("timeout", "unreachable")
SSH_FIX = (
    "kvmprep apply with the frontend group exchanges oneadmin's keys and the host keys among "
    "all machines (ONE-006 names the missing ones)"
)


def _peers(host: HostFacts) -> Mapping[str, Any] | None:
    found = host.facts.get("peers")
    return found if isinstance(found, Mapping) else None


def _hosts_of(peers: Mapping[str, Any]) -> Mapping[str, Any]:
    found = peers.get("hosts")
    return found if isinstance(found, Mapping) else {}


@dataclass(frozen=True)
class _Probe:
    """One connect src -> dst:port as src's probe reported it."""

    src: str
    dst: str
    address: str
    port: str
    state: str
    error: str
    ip: str = ""  # the address connected to

    def pair(self) -> str:
        at = f" ({self.address})" if self.address and self.address != self.dst else ""
        return f"{self.src} -> {self.dst}{at} port {self.port}"


def _connects(src: str, peers: Mapping[str, Any], dst: str | None = None) -> Iterator[_Probe]:
    """src's connects (to dst only, when given)."""
    for name, entry in _hosts_of(peers).items():
        if (dst is not None and name != dst) or not isinstance(entry, Mapping):
            continue
        for port, result in (entry.get("ports") or {}).items():
            result = result if isinstance(result, Mapping) else {}
            yield _Probe(
                src,
                str(name),
                str(entry.get("address") or ""),
                str(port),
                str(result.get("state") or "unknown"),
                str(result.get("error") or ""),
                str(result.get("address") or ""),
            )


def _loopback(probe: _Probe) -> bool:
    """The connect went to a loopback address: the peer's name resolves to the host itself."""
    return is_loopback(probe.ip.split("%", maxsplit=1)[0])


def _listening(host: HostFacts) -> dict[str, list[str]]:
    """Port -> the non-loopback addresses host's libvirt listens on (its own probe's listen
    group); {} when it was not gathered."""
    listen = host.facts.get("listen")
    sockets = listen.get("sockets") if isinstance(listen, Mapping) else None
    found: dict[str, list[str]] = {}
    for sock in sockets if isinstance(sockets, list) else ():
        if not isinstance(sock, Mapping):
            continue
        address = str(sock.get("address") or "")
        if is_loopback(address):
            continue
        found.setdefault(str(sock.get("port")), []).append(address)
    return found


def _rejected(probe: _Probe, listening: Mapping[str, Mapping[str, list[str]]]) -> bool:
    """A listener's port refused while the peer's own probe shows it listening there."""
    return (
        probe.state == "refused"
        and probe.port in LISTENER_PORTS
        and bool(listening.get(probe.dst, {}).get(probe.port))
    )


def _connect_line(probe: _Probe, listening: Mapping[str, Mapping[str, list[str]]]) -> str:
    if _rejected(probe, listening):
        bound = ", ".join(listening[probe.dst][probe.port])
        at = f" at {probe.ip}" if probe.ip else ""
        return (
            f"{probe.pair()} refused{at} although {probe.dst} listens on {bound} port "
            f"{probe.port}: rejected on the way (a firewall's REJECT), or the listener is bound "
            "to another address than the one the name resolves to"
        )
    if probe.state == "timeout":
        return f"{probe.pair()} timed out: filtered ({probe.error or 'no answer'})"
    return f"{probe.pair()} {probe.state}: {probe.error or 'no route'}"


def _net_fix(fails: Sequence[_Probe]) -> str:
    wanted: dict[str, set[str]] = {}
    for probe in fails:
        wanted.setdefault(probe.dst, set()).add(probe.port)
    where = "; ".join(
        f"TCP {', '.join(sorted(ports, key=int))} to {dst}" for dst, ports in sorted(wanted.items())
    )
    return (
        f"let the hosts of the cluster connect to each other ({where}) in the firewalls on "
        "the hosts (nft, iptables, firewalld) and between them: libvirt's listener (16509 "
        "tcp, 16514 tls) and QEMU's migration ports (49152-49215, qemu.conf "
        "migration_port_min/max)"
    )


def reachability(hosts: Sequence[HostFacts]) -> dict[str, Result]:
    """NET-002. From each host to every other host of its cluster, the migration listener's
    port and the first migration port are reachable (open or refused, not filtered)."""
    nodes = kvm_hosts(hosts)
    probes = {h.name: _peers(h) for h in nodes}
    listening = {h.name: _listening(h) for h in nodes}
    results: dict[str, Result] = {}
    for host in nodes:
        mine = probes[host.name]
        found: list[_Probe] = []
        skipped: list[str] = []  # this host's own connects, not made (no fault of its own)
        if mine is None:
            skipped.append(f"{host.name}'s probe did not test its peers (fact peers not gathered)")
        elif mine.get("skipped"):
            skipped.append(f"{host.name}: {mine['skipped']}")
        else:
            found.extend(_connects(host.name, mine))
        for other in nodes:
            theirs = probes[other.name]
            if other is not host and theirs is not None:
                found.extend(_connects(other.name, theirs, host.name))
        results[host.name] = _net_verdict(host, found, skipped, listening)
    return results


def _net_verdict(
    host: HostFacts,
    found: list[_Probe],
    skipped: list[str],
    listening: Mapping[str, Mapping[str, list[str]]],
) -> Result:
    if not found:
        if skipped:
            return Result.skip("; ".join(skipped))
        return Result.skip(f"no other host in cluster {host.expect.cluster} to connect to or from")
    # A name resolving to loopback reaches the host itself, whatever answers: not the peer.
    looped = [p for p in found if _loopback(p)]
    found = [p for p in found if not _loopback(p)]
    fails = [p for p in found if p.state in FILTERED or _rejected(p, listening)]
    unsure = [
        f"{p.pair()}: {p.state} ({p.error})"
        + (" - NET-001 judges the name" if p.state == "unresolved" else "")
        for p in found
        if p.state not in (*FILTERED, "open", "refused")
    ] + [
        f"{p.pair()} went to {p.ip}, a loopback address of {p.src} itself, not {p.dst} - "
        "NET-001 judges the name"
        for p in looped
    ]
    down = [
        f"{p.pair()} refused: {p.dst}'s libvirt listener does not listen (LV-005 judges it on "
        f"{p.dst}; the network lets it through)"
        for p in found
        if p.state == "refused" and p.port in LISTENER_PORTS and not _rejected(p, listening)
    ]
    if fails:
        return Result.fail(
            f"{len(fails)} connection(s) blocked: "
            + "; ".join([_connect_line(p, listening) for p in fails] + unsure + down),
            _net_fix(fails)
            + (
                "; a listener bound to one address (kvm_host_libvirt_listen_addr) must listen "
                "on the address the host's name resolves to on the others (NET-001)"
                if any(_rejected(p, listening) for p in fails)
                else ""
            ),
        )
    if unsure:
        return Result.error("; ".join(unsure + down + skipped))
    pairs = sorted({f"{p.src} -> {p.dst}" for p in found})
    ports = sorted({p.port for p in found}, key=lambda p: (len(p), p))
    message = (
        f"{len(pairs)} pair(s) on port(s) {', '.join(ports)}, open or refused, none "
        f"filtered: {', '.join(pairs)}"
    )
    return Result.passed("; ".join([message, *down, *(f"not tested: {s}" for s in skipped)]))


# --- ONE-008 ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Hop:
    src: str
    dst: str
    address: str
    ok: bool | None  # None: not tried
    message: str

    def line(self) -> str:
        at = f" ({self.address})" if self.address and self.address != self.dst else ""
        return f"{self.src} -> {self.dst}{at}: {self.message or 'failed'}"


def _hop(src: str, dst: str, entry: Any) -> _Hop:
    entry = entry if isinstance(entry, Mapping) else {}
    ssh = entry.get("ssh")
    address = str(entry.get("address") or "")
    if not isinstance(ssh, Mapping):
        return _Hop(src, dst, address, None, "not tried")
    message = str(ssh.get("message") or "")
    if not ssh.get("ok") and not message:
        message = f"exit status {ssh.get('rc')}"
    return _Hop(src, dst, address, bool(ssh.get("ok")), message)


@dataclass
class _Side:
    """What one machine's probe says of its hops."""

    hops: list[_Hop] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # not tested, and no fault (SKIP)
    unknown: list[str] = field(default_factory=list)  # not tested, and should be (ERROR)
    broken: list[str] = field(default_factory=list)  # no hop can work (FAIL)


def _hops_from(host: HostFacts) -> _Side:
    peers = _peers(host)
    if peers is None:
        return _Side(skipped=[f"{host.name}'s probe did not test SSH (fact peers not gathered)"])
    if peers.get("skipped"):
        return _Side(skipped=[f"{host.name}: {peers['skipped']}"])
    hops = [_hop(host.name, str(name), e) for name, e in _hosts_of(peers).items()]
    fe = peers.get("frontend")
    if isinstance(fe, Mapping):
        hops.append(_hop(host.name, str(fe.get("name") or "front-end"), fe))
    skipped = peers.get("ssh_skipped")
    if not isinstance(skipped, Mapping) or not hops:
        return _Side(hops)
    why = f"{host.name}: {skipped.get('message')}"
    if skipped.get("kind") == "ssh":
        # The drivers' hops from this machine cannot run at all.
        return _Side(broken=[f"{why}: every hop from {host.name} fails"])
    if skipped.get("kind") == "user":
        return _Side(skipped=[f"{why} (USR-001 judges it)"])
    return _Side(unknown=[why])


def _ssh_fix(fails: Sequence[_Hop]) -> str:
    fixes = []
    for hop in fails:
        target = hop.address or hop.dst
        text = hop.message.lower()
        if "host key verification failed" in text or "no matching host key" in text:
            fixes.append(f"{target}'s host key in oneadmin's known_hosts on {hop.src}")
        elif "permission denied" in text:
            fixes.append(f"{hop.src}'s oneadmin key in oneadmin's authorized_keys on {hop.dst}")
        elif "could not resolve" in text:
            fixes.append(f"{target} resolving on {hop.src} (NET-001)")
        else:
            fixes.append(f"sshd on {hop.dst} reachable from {hop.src}")
    return f"{SSH_FIX}; needed: " + "; ".join(dict.fromkeys(fixes))


def _ssh_verdict(side: _Side, none: str, *, managed: bool = True) -> Result:
    """``managed``: kvmprep sets the hops up (a frontend group); without it, failing hops
    between hosts WARN: apply would leave the hosts as they are (ONE-006 SKIPs then)."""
    fails = [h for h in side.hops if h.ok is False]
    unknown = side.unknown + [h.line() for h in side.hops if h.ok is None]
    if fails and not managed and not side.broken:
        return Result.warn(
            f"{len(fails)} hop(s) between the hosts fail as oneadmin: "
            + "; ".join([h.line() for h in fails] + unknown)
            + " (no frontend group: kvmprep exchanges the keys only with a front-end)",
            "add the front-end to the inventory (frontend group) and run kvmprep apply: "
            + _ssh_fix(fails),
        )
    if fails or side.broken:
        return Result.fail(
            f"{len(fails) + len(side.broken)} hop(s) fail as oneadmin: "
            + "; ".join(side.broken + [h.line() for h in fails] + unknown),
            _ssh_fix(fails) if fails else "install the OpenSSH client (openssh-client)",
        )
    if unknown:
        return Result.error("; ".join(unknown + side.skipped))
    if not side.hops:
        return Result.skip("; ".join(side.skipped) or none)
    shown = ", ".join(f"{h.src} -> {h.dst}" for h in side.hops)
    return Result.passed(
        "; ".join([f"{len(side.hops)} hop(s) work as oneadmin in BatchMode: {shown}"])
        + "".join(f"; not tested: {why}" for why in side.skipped)
    )


def ssh_hops(hosts: Sequence[HostFacts]) -> dict[str, Result]:
    """ONE-008. oneadmin's SSH hops work, BatchMode, as the drivers run them: host -> each
    other host of its cluster, host -> front-end, front-end -> host. Each machine's row has
    every hop it is either end of (a missing key is fixed on one end or the other)."""
    fe = frontend_of(hosts)
    nodes = kvm_hosts(hosts)
    front = _Side()
    if fe is not None and fe.error:
        front.unknown.append(f"front-end {fe.name} was not probed: {fe.error}")
    elif fe is not None:
        front = _hops_from(fe)
    sides = {h.name: _hops_from(h) for h in nodes}
    every = [hop for side in (*sides.values(), front) for hop in side.hops]
    results: dict[str, Result] = {}
    for host in nodes:
        own = sides[host.name]
        row = _Side(
            [h for h in every if host.name in (h.src, h.dst)],
            list(own.skipped),
            list(own.unknown),
            list(own.broken),
        )
        if fe is not None:
            # What the front-end's probe could not say concerns its hop to this host too.
            row.skipped += front.skipped
            row.unknown += front.unknown
            row.broken += front.broken
        results[host.name] = _ssh_verdict(
            row,
            f"no other host in cluster {host.expect.cluster} and no front-end: no hop to test",
            managed=fe is not None,
        )
    if fe is not None:
        row = _Side(
            [h for h in every if fe.name in (h.src, h.dst)],
            front.skipped,
            front.unknown,
            front.broken,
        )
        results[fe.name] = _ssh_verdict(row, "no kvm host to test")
    return results
