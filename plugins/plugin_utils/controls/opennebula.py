"""Judges of the OpenNebula controls: what the front-end needs from a host, and the front-end.

The hosts' side comes from kvm_host_probe's ``one`` group (and ``qemu`` for the emulator), the
front-end's from one_frontend_probe, plus ``api``: oned's host pool read once per run from the
controller. Judges that compare a host with the front-end are fleet judges: they see every
host and the front-end (``HostFacts.role``). Without a front-end in the inventory they SKIP:
a host prepared alone gets its remotes, keys and registration when a front-end adopts it.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import (
    Expect,
    HostFacts,
    MissingFact,
    Result,
    Role,
    fact,
)

SHOWN = 5  # differing files named in a message
MONITORED = ("MONITORED", "MONITORING_MONITORED")
PARKED = ("DISABLED", "OFFLINE", "MONITORING_DISABLED")
#: Generations of OpenNebula's driver syntax: where the kvm IM_MAD and VM_MAD are declared.
SYNTAX = {
    "legacy": (("oned.conf", "im_kvm"), ("oned.conf", "vmm_kvm")),
    "oned": (("oned.conf", "kvm"), ("oned.conf", "kvm")),
    "monitord": (("monitord.conf", "kvm"), ("oned.conf", "kvm")),
}


def _names(names: Sequence[str]) -> str:
    return ", ".join(names)


def frontend_of(hosts: Sequence[HostFacts]) -> HostFacts | None:
    return next((h for h in hosts if h.role is Role.FRONTEND), None)


def kvm_hosts(hosts: Sequence[HostFacts]) -> list[HostFacts]:
    return [h for h in hosts if h.role is Role.KVM_HOST]


def _frontend(hosts: Sequence[HostFacts], why: str) -> HostFacts | dict[str, Result]:
    """The probed front-end, or the result of every machine when there is none to read:
    SKIP without a frontend group (``why`` says what it would bring), ERROR when it could not
    be probed."""
    fe = frontend_of(hosts)
    if fe is None:
        result = Result.skip(f"no frontend group in the inventory: {why}")
    elif fe.error:
        result = Result.error(f"front-end {fe.name} was not probed: {fe.error}")
    else:
        return fe
    return {h.name: result for h in hosts}


def one_name(host: HostFacts) -> str:
    """The name OpenNebula knows the host by: one_frontend_host_name, else its inventory name."""
    return host.expect.one_name or host.name


def _per_host(hosts: Sequence[HostFacts], judge: Any, *args: Any) -> dict[str, Result]:
    results = {}
    for host in kvm_hosts(hosts):
        try:
            results[host.name] = judge(host, *args)
        except MissingFact as exc:
            results[host.name] = Result.error(f"fact {exc} was not gathered")
    return results


# --- ONE-001: remotes --------------------------------------------------------------------------


def _remotes_differ(fe_files: Mapping[str, str], files: Mapping[str, str]) -> list[str]:
    return sorted(p for p, digest in fe_files.items() if files.get(p) != digest)


def _remotes(host: HostFacts, fe: HostFacts) -> Result:
    here = fact(host.facts, "one", "remotes")
    there = fact(fe.facts, "remotes")
    wanted_dir = fact(fe.facts, "scripts_remote_dir") or "/var/tmp/one"
    where = f"{here['path']} on {host.name}"
    sync = f"kvmprep apply copies {fe.name}'s {there['path']} there (like `onehost sync`)"
    if wanted_dir.rstrip("/") != here["path"].rstrip("/"):
        return Result.fail(
            f"{fe.name} copies the remotes to {wanted_dir} (SCRIPTS_REMOTE_DIR), the host's "
            f"kvm_host_remotes_dir is {here['path']}",
            f"set kvm_host_remotes_dir: {wanted_dir} and run kvmprep apply",
        )
    if not there.get("version"):
        return Result.error(f"{fe.name} has no {there['path']}/VERSION to compare with")
    if not here["exists"]:
        return Result.fail(f"no {where}: the host has no drivers", sync)
    if here.get("version") != there["version"]:
        found = here.get("version") or "no VERSION"
        return Result.fail(f"{where}: {found}, {fe.name} has {there['version']}", sync)
    if here.get("tree") == there.get("tree"):
        return Result.passed(
            f"{where}: VERSION {there['version']}, {len(there['files'])} files identical to "
            f"{fe.name}'s"
        )
    differ = _remotes_differ(there.get("files") or {}, here.get("files") or {})
    if not differ:
        extra = sorted(set(here.get("files") or {}) - set(there.get("files") or {}))
        return Result.passed(
            f"{where}: VERSION {there['version']}, every file of {fe.name}'s identical "
            f"({len(extra)} more here: {_names(extra[:SHOWN])})"
        )
    more = f" and {len(differ) - SHOWN} more" if len(differ) > SHOWN else ""
    return Result.fail(
        f"{where}: VERSION {there['version']} but {len(differ)} file(s) differ from "
        f"{fe.name}'s: {_names(differ[:SHOWN])}{more}",
        sync,
    )


def remotes(hosts: Sequence[HostFacts]) -> dict[str, Result]:
    """ONE-001. The host runs the front-end's drivers: same VERSION, same files."""
    fe = _frontend(
        hosts, "the remotes come with the front-end (kvmprep apply with a frontend group)"
    )
    if isinstance(fe, dict):
        return fe
    return _per_host(hosts, _remotes, fe)


# --- ONE-002: registered and monitored ---------------------------------------------------------


def _registration(host: HostFacts, api: Mapping[str, Any], fe: HostFacts) -> Result:
    name = one_name(host)
    found = next((h for h in api.get("hosts") or [] if h.get("name") == name), None)
    register = "kvmprep apply registers it (one.host.allocate) and waits until it is monitored"
    if found is None:
        return Result.fail(f"OpenNebula on {fe.name} has no host {name}", register)
    where = f"host {name} (id {found['id']}, cluster {found.get('cluster')})"
    drivers = (found.get("im_mad"), found.get("vm_mad"))
    if drivers != ("kvm", "kvm"):
        return Result.fail(
            f"{where} has drivers IM_MAD {drivers[0]}, VM_MAD {drivers[1]}, not kvm",
            "kvmprep apply with one_frontend_fix_mismatch: true re-registers it with kvm "
            "(only while it runs no VM)",
        )
    if found.get("cluster") != host.expect.cluster and str(found.get("cluster_id")) != str(
        host.expect.cluster
    ):
        return Result.fail(
            f"{where} is not in cluster {host.expect.cluster} (one_frontend_cluster)",
            "kvmprep apply with one_frontend_fix_mismatch: true moves it",
        )
    state = found.get("state_name")
    if state in MONITORED:
        return Result.passed(f"{where}: {state}")
    error = f": {found['error']}" if found.get("error") else ""
    if state in PARKED:
        return Result.warn(f"{where} is {state} (an operator's choice){error}")
    if state in ("ERROR", "MONITORING_ERROR"):
        return Result.fail(
            f"{where} is {state}{error}",
            "fix what the error names, then `onehost enable` or wait for the next monitoring cycle",
        )
    return Result.warn(f"{where} is {state}, not monitored yet{error}")


def registered(hosts: Sequence[HostFacts]) -> dict[str, Result]:
    """ONE-002. OpenNebula knows the host with the kvm drivers and monitors it."""
    fe = _frontend(hosts, "registration is the front-end's (kvmprep apply with a frontend group)")
    if isinstance(fe, dict):
        return fe
    api = fe.facts.get("api")
    if not isinstance(api, Mapping):
        return {h.name: Result.error("oned's host pool was not read") for h in kvm_hosts(hosts)}
    if api.get("error"):
        why = f"OpenNebula's API could not be read: {api['error']}"
        return {h.name: Result.error(why) for h in kvm_hosts(hosts)}
    return _per_host(hosts, _registration, api, fe)


# --- ONE-003: the front-end's kvm drivers ------------------------------------------------------


def syntax_of(facts: Mapping[str, Any]) -> str | None:
    """legacy (3.x), oned (4.x to 5.10) or monitord (5.12 and later), as the role decides it."""
    if fact(facts, "files", "monitord.conf", "exists"):
        return "monitord"
    version = fact(facts, "version") or ""
    major = version.split(".")[0]
    if major.isdigit():
        return "oned" if int(major) >= 4 else "legacy"
    return None


def _driver(facts: Mapping[str, Any], file: str, section: str, name: str) -> bool:
    sections = fact(facts, "drivers", file, section)
    return any(s.get("NAME") == name for s in sections)


def frontend_drivers(facts: Mapping[str, Any], expect: Expect) -> Result:
    """ONE-003. oned runs the kvm drivers, declared in the syntax of its version."""
    broken = [
        f"{name}: {entry['error']}"
        for name, entry in fact(facts, "files").items()
        if name in ("oned.conf", "monitord.conf") and entry.get("error")
    ]
    if broken:
        return Result.error("; ".join(broken))
    if not fact(facts, "files", "oned.conf", "exists"):
        return Result.fail(
            f"no {fact(facts, 'files', 'oned.conf', 'path')}: OpenNebula is not installed here"
        )
    syntax = syntax_of(facts)
    if syntax is None:
        return Result.error("no remotes VERSION and no monitord.conf: the version is unknown")
    (im_file, im_name), (vm_file, vm_name) = SYNTAX[syntax]
    missing = [
        f"{section} {name} in {file}"
        for section, file, name in (("IM_MAD", im_file, im_name), ("VM_MAD", vm_file, vm_name))
        if not _driver(facts, file, section, name)
    ]
    version = fact(facts, "version") or "unknown version"
    if missing:
        return Result.fail(
            f"OpenNebula {version} ({syntax} syntax): no {_names(missing)}",
            "kvmprep apply enables them in that syntax (one_frontend_conf, with a backup); "
            "restart oned (one_frontend_restart_oned: true)",
        )
    return Result.passed(
        f"OpenNebula {version} ({syntax} syntax): IM_MAD {im_name} in {im_file}, VM_MAD "
        f"{vm_name} in {vm_file}"
    )


# --- ONE-011: oned runs with the configuration on disk ---------------------------------------

#: The files oned reads at start only (monitord.conf through the monitord it starts).
LOADED_AT_START = ("oned.conf", "monitord.conf", "vmm_exec_kvm.conf")
#: Seconds a file's mtime may pass oned's start time and still count as read by it. The start
#: time is /proc/stat's btime (whole seconds, and derived from the wall clock, so it moves by a
#: second when the clock is adjusted) plus the process's starttime in clock ticks; some file
#: systems keep mtimes in whole seconds. A file written and oned started in the same second must
#: not read as "changed after", and nobody edits oned's files within 2 s after a restart.
CLOCK_SLACK = 2.0
RESTART = "restart OpenNebula (systemctl restart opennebula)"
RESTART_FIX = f"{RESTART}, or kvmprep apply with one_frontend_restart_oned=true"


def when(epoch: float) -> str:
    """An epoch time as operators read it, in UTC (the controller's zone may not be the
    front-end's)."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def oned_running(facts: Mapping[str, Any]) -> bool:
    """Whether oned runs on the front-end; ``ValueError`` when the probe could not tell."""
    oned = fact(facts, "oned")
    if oned.get("running") is None:
        raise ValueError(f"whether oned runs is unknown: {oned.get('error')}")
    return bool(oned["running"])


def changed_after_start(facts: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    """The files of ``names`` changed after a running oned started, each with its time;
    ``ValueError`` when a file exists but its time is unknown."""
    started = fact(facts, "oned", "started")
    changed = []
    for name in names:
        entry = fact(facts, "files", name)
        if not entry.get("exists"):
            continue  # monitord.conf before 5.12; a missing oned.conf is ONE-003's FAIL
        if entry.get("mtime") is None:
            raise ValueError(f"when {entry['path']} changed is unknown: {entry.get('error')}")
        if entry["mtime"] > started + CLOCK_SLACK:
            changed.append(f"{name} changed at {when(entry['mtime'])}")
    return changed


def not_loaded(facts: Mapping[str, Any], name: str) -> str:
    """Why oned does not use what the file ``name`` says now, "" when it does or when the
    probe could not tell (ONE-011 reports that)."""
    try:
        if not oned_running(facts):
            return "oned is not running"
        changed = changed_after_start(facts, (name,))
    except (MissingFact, ValueError):
        return ""
    if not changed:
        return ""
    return f"{changed[0]}, after oned started at {when(fact(facts, 'oned', 'started'))}"


def oned_loaded(facts: Mapping[str, Any], expect: Expect) -> Result:
    """ONE-011. oned reads its configuration at start only: what it runs with is what the
    files said then."""
    try:
        if not oned_running(facts):
            return Result.fail(
                "oned is not running",
                "start OpenNebula (systemctl start opennebula); oned reads the files then",
            )
        changed = changed_after_start(facts, LOADED_AT_START)
    except ValueError as exc:
        return Result.error(str(exc))
    oned = fact(facts, "oned")
    since = f"oned (pid {oned['pid']}) started at {when(oned['started'])}"
    if changed:
        return Result.fail(
            f"{_names(changed)}, after {since}: oned runs with what they said before",
            RESTART_FIX,
        )
    present = [
        f"{name} ({when(fact(facts, 'files', name)['mtime'])})"
        for name in LOADED_AT_START
        if fact(facts, "files", name).get("exists")
    ]
    shown = _names(present) or "none of its files (see ONE-003)"
    return Result.passed(f"{since}, after the last change of {shown}")


# --- ONE-004, ONE-005, ONE-007: on the host ----------------------------------------------------


def node_runtime(facts: Mapping[str, Any], expect: Expect) -> Result:
    """ONE-004. What the remotes run on the host, as oneadmin."""
    runtime = fact(facts, "one", "runtime")
    missing = []
    ruby = runtime["ruby"]
    if not ruby.get("path"):
        missing.append("ruby")
    elif not ruby.get("loads"):
        missing.append(f"Ruby as {expect.oneadmin_user}: {ruby.get('error')}")
    missing += [f"{tool} (not found)" for tool, path in runtime["tools"].items() if not path]
    package = expect.one_node_install == "package"
    sudoers = fact(runtime, "sudoers_package" if package else "sudoers")
    if not sudoers.get("exists"):
        missing.append(f"{sudoers['path']} ({sudoers.get('error')})")
    elif sudoers.get("owner") != "root" or sudoers.get("mode") not in ("0440", "0400"):
        missing.append(f"{sudoers['path']} is {sudoers['owner']} {sudoers['mode']}, not root 0440")
    if missing:
        return Result.fail(
            "; ".join(missing),
            "kvmprep apply (kvm_host_one_node_install: package) installs OpenNebula's "
            "opennebula-node-kvm and the distribution's ruby-sqlite3, pciutils, rsync, "
            "libxml2-utils"
            if package
            else "kvmprep apply installs ruby, ruby-sqlite3, pciutils, rsync, libxml2-utils, "
            "load_opennebula_paths.rb and /etc/sudoers.d/kvmprep-oneadmin",
        )
    return Result.passed(
        "Ruby loads sqlite3 and load_opennebula_paths as "
        f"{expect.oneadmin_user}; {', '.join(runtime['tools'])} and the sudoers file present"
    )


def _emulator(host: HostFacts, fe: HostFacts | None) -> Result:
    emulator = fact(host.facts, "qemu", "emulator")
    path = emulator["opennebula_path"]
    wanted = (fe.facts.get("vmm_kvm") or {}).get("emulator") if fe and not fe.error else None
    if wanted and wanted != path:
        return Result.warn(
            f"{fe.name if fe else ''}'s vmm_exec_kvm.conf sets EMULATOR = {wanted}; the check "
            f"looked at {path}",
            f"set kvm_host_emulator_link: {wanted} and run kvmprep apply",
        )
    if not emulator.get("opennebula_present"):
        target = emulator.get("path") or "the distribution's qemu-system binary"
        return Result.fail(
            f"{path} does not resolve to a runnable emulator",
            f"kvmprep apply links {path} to {target}",
        )
    return Result.passed(f"{path} -> {emulator.get('resolved')}")


def emulator(hosts: Sequence[HostFacts]) -> dict[str, Result]:
    """ONE-005. The KVM driver starts VMs with its EMULATOR path: it must run here."""
    return _per_host(hosts, _emulator, frontend_of(hosts))


def directories(facts: Mapping[str, Any], expect: Expect) -> Result:
    """ONE-007. The datastores and the remotes dir are oneadmin's."""
    one = fact(facts, "one")
    user = expect.oneadmin_user
    problems = []
    for what, entry in (("datastores", one.get("datastores")), ("remotes", one["remotes"])):
        if entry is None:
            problems.append(f"no {what} dir ({user} does not exist)")
        elif not entry.get("exists"):
            problems.append(f"{entry['path']} does not exist")
        elif entry.get("owner") != user:
            problems.append(f"{entry['path']} belongs to {entry['owner']}")
    foreign = one["remotes"].get("foreign_count") or 0
    if foreign:
        shown = _names(one["remotes"]["foreign"])
        problems.append(f"{foreign} path(s) in {one['remotes']['path']} not {user}'s: {shown}")
    if problems:
        return Result.fail(
            "; ".join(problems),
            f"kvmprep apply creates the dirs and gives root-owned leftovers back to {user}",
        )
    return Result.passed(f"{one['datastores']['path']} and {one['remotes']['path']} are {user}'s")


# --- USR-003 and ONE-006: SSH trust ------------------------------------------------------------


def _hashed_match(pattern: str, name: str) -> bool:
    """An OpenSSH hashed known_hosts name: |1|base64(salt)|base64(HMAC-SHA1(salt, name))."""
    parts = pattern.split("|")
    if len(parts) != 4 or parts[1] != "1":
        return False
    try:
        salt, digest = base64.b64decode(parts[2]), base64.b64decode(parts[3])
    except ValueError:
        return False
    return hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), digest)


def name_matches(patterns: Sequence[str], name: str) -> bool:
    """ssh's matching of a known_hosts line's patterns (port 22: the bare name)."""
    matched = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern[1:] if negated else pattern
        if pattern.startswith("|"):
            hit = _hashed_match(pattern, name)
        else:
            hit = fnmatch.fnmatchcase(name.lower(), pattern.lower())
        if hit and negated:
            return False
        matched = matched or hit
    return matched


def known_under(known_hosts: Sequence[Mapping[str, Any]], name: str, keys: Sequence[str]) -> str:
    """'ok', 'stale' (the name is known with another key: ssh refuses) or 'unknown' (prompt)."""
    entries = [e for e in known_hosts if name_matches(e["patterns"], name)]
    if any(e.get("marker") == "@revoked" and e["key"] in keys for e in entries):
        return "stale"
    plain = [e for e in entries if e.get("marker") is None]
    if any(e["key"] in keys for e in plain):
        return "ok"
    return "stale" if plain else "unknown"


class _Machine:
    """One end of an SSH direction: its oneadmin key, trust lists and host keys."""

    def __init__(self, machine: HostFacts, name: str):
        self.label = machine.name
        self.name = name
        ssh = fact(machine.facts, "one", "ssh") if machine.role is Role.KVM_HOST else None
        ssh = ssh if ssh is not None else fact(machine.facts, "ssh")
        self.public_key = ssh.get("public_key")
        self.authorized = ssh.get("authorized_keys")
        self.known = ssh.get("known_hosts")
        self.host_keys = ssh.get("host_keys") or []
        self.user = ssh.get("user") or "oneadmin"


def direction(source: _Machine, target: _Machine) -> list[str]:
    """What keeps source's oneadmin from `ssh target` without a prompt (empty: nothing)."""
    problems = []
    if not source.public_key:
        problems.append(f"{source.label}'s {source.user} has no key pair")
    elif target.authorized is None:
        problems.append(f"{target.label}'s authorized_keys cannot be read")
    elif source.public_key not in target.authorized:
        problems.append(f"{source.label}'s key not in {target.label}'s authorized_keys")
    if source.known is None:
        problems.append(f"{source.label}'s known_hosts cannot be read")
    elif not target.host_keys:
        problems.append(f"{target.label} offers no readable host key")
    else:
        state = known_under(source.known, target.name, target.host_keys)
        if state != "ok":
            what = "a stale entry for" if state == "stale" else "no entry for"
            problems.append(f"{source.label}'s known_hosts has {what} {target.name}")
    return problems


def _arrow(source: _Machine, target: _Machine, problems: Sequence[str]) -> str:
    return f"{source.label} -> {target.label} ({'; '.join(problems)})"


def _machines(hosts: Sequence[HostFacts]) -> tuple[_Machine, list[_Machine]]:
    fe = frontend_of(hosts)
    if fe is None:
        raise AssertionError("judged without a front-end")
    return _Machine(fe, fe.name), [_Machine(h, one_name(h)) for h in kvm_hosts(hosts)]


_TRUST_FIX = (
    "kvmprep apply (with the frontend group) exchanges oneadmin's keys and the host keys of "
    "every machine, under every name and address, between the front-end and all hosts"
)


def frontend_trust(hosts: Sequence[HostFacts]) -> dict[str, Result]:
    """USR-003. The front-end's oneadmin reaches the host over SSH without a prompt."""
    skipped = _frontend(hosts, "the front-end's key is authorized when a front-end adopts the host")
    if isinstance(skipped, dict):
        return skipped
    results: dict[str, Result] = {}
    try:
        fe, nodes = _machines(hosts)
    except MissingFact as exc:
        return {h.name: Result.error(f"fact {exc} was not gathered") for h in kvm_hosts(hosts)}
    for node in nodes:
        problems = direction(fe, node)
        results[node.label] = (
            Result.fail(_arrow(fe, node, problems), _TRUST_FIX)
            if problems
            else Result.passed(
                f"{fe.label}'s oneadmin key authorized; host key known as {node.name}"
            )
        )
    return results


def _resolution(host: HostFacts, fe_name: str) -> str | None:
    found = fact(host.facts, "one", "frontend")
    if found is None:
        return f"{host.name} was not asked to resolve {fe_name}"
    if found.get("error"):
        return f"{fe_name} does not resolve on {host.name} ({found['error']})"
    if found.get("loopback"):
        shown = _names(found["addresses"])
        return f"{fe_name} resolves to loopback on {host.name} ({shown})"
    return None


def ssh_trust(hosts: Sequence[HostFacts]) -> dict[str, Result]:
    """ONE-006. oneadmin's SSH in all four directions, without a prompt, and the front-end's
    name resolving on every host to an address that is not loopback."""
    skipped = _frontend(
        hosts, "the trust between the front-end and the hosts is set up with a front-end"
    )
    if isinstance(skipped, dict):
        return skipped
    try:
        fe, nodes = _machines(hosts)
    except MissingFact as exc:
        return {h.name: Result.error(f"fact {exc} was not gathered") for h in hosts}
    pairs = [(fe, fe)] + [(a, b) for a in [fe, *nodes] for b in [fe, *nodes] if a is not b]
    broken = {(a.label, b.label): direction(a, b) for a, b in pairs}
    by_label = {m.label: m for m in [fe, *nodes]}
    results: dict[str, Result] = {}
    for machine in [fe, *nodes]:
        mine = [
            _arrow(by_label[a], by_label[b], p)
            for (a, b), p in broken.items()
            if p and machine.label in (a, b)
        ]
        host = next(h for h in hosts if h.name == machine.label)
        if host.role is Role.KVM_HOST:
            try:
                why = _resolution(host, fe.name)
            except MissingFact as exc:
                why = f"fact {exc} was not gathered"
            if why:
                mine.append(why)
        checked = sum(1 for a, b in broken if machine.label in (a, b))
        if mine:
            results[machine.label] = Result.fail(
                f"{len(mine)} problem(s): " + "; ".join(mine),
                _TRUST_FIX + f"; make {fe.name} resolve on the hosts to its own address",
            )
        else:
            results[machine.label] = Result.passed(
                f"all {checked} SSH directions with {machine.label} work without a prompt"
            )
    return results
