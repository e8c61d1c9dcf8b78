"""How names resolve on a machine, within a bounded time (read-only).

Shared by kvm_host_probe (groups C(one) and C(names), on the hosts) and one_frontend_probe (the
front-end): the addresses each name resolves to, as ssh, libvirt and OpenNebula's drivers look
it up (getaddrinfo: /etc/hosts, DNS, whatever nsswitch.conf says), for check's ONE-006 and
NET-001. Runs on the target's python3 (3.6 or later), standard library only.

getaddrinfo has no timeout of its own (a dead DNS server makes it wait resolv.conf's timeout
times its attempts, per server, per address family), so each name is resolved in a daemon
thread and the caller waits for all of them until one shared deadline: a name without an
answer by then is reported as such and its thread is abandoned (it ends with the process).
"""

import ipaddress
import socket
import threading
import time

#: Seconds resolve_names waits for all the names together.
RESOLVE_TIMEOUT = 2.0
#: Names resolved at once (the others wait for a free worker, within the same deadline).
RESOLVE_WORKERS = 32


def _errtext(exc):
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


def resolve_name(name, getaddrinfo=socket.getaddrinfo):
    """The addresses name resolves to on this machine, in getaddrinfo's order (the order a
    connection tries them), and whether any of them is a loopback address."""
    res = {"name": name, "addresses": [], "loopback": False, "error": None}
    try:
        infos = getaddrinfo(name, None, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError) as exc:
        res["error"] = _errtext(exc)
        return res
    for info in infos:
        address = info[4][0]
        if address not in res["addresses"]:
            res["addresses"].append(address)
    res["loopback"] = any(
        ipaddress.ip_address(a.split("%")[0]).is_loopback for a in res["addresses"]
    )
    return res


def resolve_names(
    names, timeout=RESOLVE_TIMEOUT, getaddrinfo=socket.getaddrinfo, workers=RESOLVE_WORKERS
):
    """{name: resolve_name(name)} for each distinct non-empty name, all within ``timeout``
    seconds: a name still unresolved then has ``error`` "no answer within N s"."""
    pending = list(dict.fromkeys(n for n in names if n))
    results = {}
    lock = threading.Lock()

    def work():
        while True:
            with lock:
                if not pending:
                    return
                name = pending.pop(0)
            results[name] = resolve_name(name, getaddrinfo)

    wanted = list(pending)
    deadline = time.monotonic() + timeout
    threads = [
        threading.Thread(target=work, name="resolve-%d" % i, daemon=True)
        for i in range(min(len(wanted), workers))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    with lock:
        del pending[:]  # the workers still waiting for an answer take no other name
    late = "no answer within %g s" % timeout
    return {
        name: results.get(name) or {"name": name, "addresses": [], "loopback": False, "error": late}
        for name in wanted
    }
