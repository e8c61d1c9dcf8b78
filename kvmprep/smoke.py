"""``kvmprep check --smoke [--migrate]``: boot (and live-migrate) a tiny KVM domain for real.

playbooks/smoke.yml runs after the static check, on the hosts it reached; this module runs it,
reads the results of its ``kvmprep smoke ...`` tasks into a ``smoke`` fact per host (judged by
the SMOKE-* controls) and, when the run is interrupted, runs playbooks/smoke-cleanup.yml so the
run's domain and files never outlive it. Every name the run creates carries its run id.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from kvmprep import content, runner

PLAYBOOK = "smoke"
CLEANUP_PLAYBOOK = "smoke-cleanup"

BOOT_FAILED = "kvmprep smoke boot failed"
MIGRATION_FAILED = "kvmprep smoke migration failed"
MIGRATION_PLAN = "kvmprep smoke migration plan"
CLEANUP = "kvmprep smoke cleanup"

#: What each task of the boot does, for the message of a failure.
BOOT_STEPS = {
    "kvmprep smoke disk": "creating the disk",
    "kvmprep smoke domain XML": "writing the domain XML",
    "kvmprep smoke start": "starting the domain",
    "kvmprep smoke stop": "destroying the domain",
}
#: The tasks of the migration: (what they do, the direction they belong to or None).
MIGRATION_STEPS = {
    "The domain booted on both hosts": ("", None),
    "kvmprep smoke migration disk": ("creating the disk on {destination}", None),
    "kvmprep smoke migration start": ("starting the domain on {source}", None),
    "kvmprep smoke migrate there": ("", "there"),
    "kvmprep smoke running there": ("not running after the migration", "there"),
    "kvmprep smoke migrate back": ("", "back"),
    "kvmprep smoke running back": ("not running after the migration", "back"),
    "kvmprep smoke migration stop": ("destroying the domain on {source}", None),
}
TIMED = (
    "kvmprep smoke disk",
    "kvmprep smoke start",
    "kvmprep smoke stop",
    "kvmprep smoke migrate there",
    "kvmprep smoke migrate back",
)
CAPTURE = (*TIMED, BOOT_FAILED, MIGRATION_FAILED, MIGRATION_PLAN, CLEANUP)

_DELTA = re.compile(r"(?:(\d+) days?, )?(\d+):(\d\d):(\d\d(?:\.\d+)?)\Z")


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def domain_name(run_id: str) -> str:
    return f"kvmprep-smoke-{run_id}"


def extravars(run_id: str, *, migrate: bool) -> dict[str, Any]:
    return {"kvmprep_smoke_run_id": run_id, "kvmprep_smoke_migrate": migrate}


def run_smoke(
    inventories: Sequence[Any],
    hosts: Sequence[str],
    run_id: str,
    *,
    migrate: bool = False,
    **kwargs: Any,
) -> runner.RunResult:
    """Run playbooks/smoke.yml on ``hosts`` (the ones the static check reached)."""
    return runner.run_playbook(
        content.playbook(PLAYBOOK),
        inventories,
        limit=",".join(hosts),
        extravars=extravars(run_id, migrate=migrate),
        capture=CAPTURE,
        **kwargs,
    )


def run_cleanup(
    inventories: Sequence[Any], hosts: Sequence[str], run_id: str, **kwargs: Any
) -> runner.RunResult:
    """Remove what smoke run ``run_id`` may have left on ``hosts`` (after an interruption)."""
    return runner.run_playbook(
        content.playbook(CLEANUP_PLAYBOOK),
        inventories,
        limit=",".join(hosts),
        extravars={"kvmprep_smoke_run_id": run_id},
        capture=(CLEANUP,),
        **kwargs,
    )


def cleanup_failures(result: runner.RunResult, hosts: Sequence[str]) -> dict[str, str]:
    """Host -> why the cleanup did not run there (empty when every host was cleaned)."""
    failures = {}
    states = {h.name: h for h in result.hosts}
    for name in hosts:
        if CLEANUP in (result.task_results.get(name) or {}):
            continue
        state = states.get(name)
        failures[name] = (state.message if state else None) or result.error or "did not run"
    return failures


def seconds(res: Mapping[str, Any]) -> float | None:
    """The duration of a command task (its ``delta``, "0:00:01.234567") in seconds."""
    match = _DELTA.match(str(res.get("delta") or ""))
    if not match:
        return None
    days, hours, minutes, secs = match.groups()
    return ((int(days or 0) * 24 + int(hours)) * 60 + int(minutes)) * 60 + float(secs)


def _error(res: Mapping[str, Any]) -> tuple[str, str]:
    """The failed task and its message, from a ``... failed`` set_fact result."""
    error = (res.get("ansible_facts") or {}).get("kvmprep_smoke_error") or {}
    result = error.get("result") if isinstance(error.get("result"), Mapping) else {}
    # One line: virsh's "error: ..." lines joined.
    message = runner.failure_message(result).removeprefix("non-zero return code: ")
    lines = [line.strip() for line in message.splitlines()]
    return str(error.get("task") or "?"), " ".join(line for line in lines if line)


def smoke_facts(
    result: runner.RunResult, hosts: Sequence[str], *, migrate: bool, run_id: str
) -> dict[str, dict[str, Any]]:
    """Host -> its ``smoke`` fact: ``boot``, ``migration`` (None without --migrate), ``cleanup``.

    Each part has ``status`` (pass, fail or error) and ``message``; timings are in seconds.
    """
    states = {h.name: h for h in result.hosts}
    results = {name: result.task_results.get(name) or {} for name in hosts}
    facts: dict[str, dict[str, Any]] = {}
    for name in hosts:
        state = states.get(name)
        not_run = (state.message if state else None) or result.error or "did not run"
        if state is not None and state.unreachable:
            not_run = f"unreachable: {not_run}"
        facts[name] = {
            "run_id": run_id,
            "domain": domain_name(run_id),
            "boot": _boot(results[name], not_run),
            "migration": None,
            "cleanup": _cleanup(results[name], state, not_run),
        }
    if migrate:
        migration = _migration(results, hosts, states, result.error)
        for name in hosts:
            facts[name]["migration"] = migration.get(name) or {
                "status": "skip",
                "message": "live migration is tested between the first two hosts only ("
                + " and ".join(h for h in migration if h)
                + ")",
            }
    return facts


def _boot(results: Mapping[str, Mapping[str, Any]], not_run: str) -> dict[str, Any]:
    if BOOT_FAILED in results:
        task, message = _error(results[BOOT_FAILED])
        step = BOOT_STEPS.get(task, task)
        return {"status": "fail", "message": f"{step}: {message}", "step": step}
    if "kvmprep smoke stop" not in results:
        return {"status": "error", "message": f"the smoke test did not complete: {not_run}"}
    return {
        "status": "pass",
        "disk_s": seconds(results["kvmprep smoke disk"]),
        "start_s": seconds(results["kvmprep smoke start"]),
        "stop_s": seconds(results["kvmprep smoke stop"]),
        "message": "",
    }


def _cleanup(
    results: Mapping[str, Mapping[str, Any]], state: runner.HostState | None, not_run: str
) -> dict[str, Any]:
    if CLEANUP in results:
        return {"status": "pass", "removed": str(results[CLEANUP].get("stdout") or "").strip()}
    if state is not None and state.failed_task == CLEANUP:
        return {"status": "fail", "message": state.message or "failed"}
    return {"status": "error", "message": f"the cleanup did not run: {not_run}"}


def _migration(
    results: Mapping[str, Mapping[str, Mapping[str, Any]]],
    hosts: Sequence[str],
    states: Mapping[str, runner.HostState],
    run_error: str | None,
) -> dict[str, dict[str, Any]]:
    """The migration's result for the two hosts it ran between (keyed by host name)."""
    if len(hosts) < 2:
        reached = ", ".join(hosts) or "none"
        message = f"needs two hosts the static check reached; it reached {reached}"
        return {name: {"status": "error", "message": message} for name in hosts}
    source = next((h for h in hosts if MIGRATION_PLAN in results[h]), None)
    if source is None:
        state = states.get(hosts[0])
        why = (state.message if state else None) or run_error or "did not run"
        message = f"the live migration did not run: {why}"
        return {name: {"status": "error", "message": message} for name in hosts[:2]}
    plan = results[source][MIGRATION_PLAN].get("ansible_facts", {}).get("kvmprep_smoke_plan", {})
    destination = str(plan.get("destination") or "?")
    base = {
        "source": source,
        "destination": destination,
        "transport": plan.get("transport"),
        "there": plan.get("there"),
        "back": plan.get("back"),
    }
    there_s = seconds(results[source].get("kvmprep smoke migrate there") or {})
    back_s = seconds(results[source].get("kvmprep smoke migrate back") or {})
    if MIGRATION_FAILED in results[source]:
        task, message = _error(results[source][MIGRATION_FAILED])
        step, direction = MIGRATION_STEPS.get(task, (task, None))
        if task == "The domain booted on both hosts":
            outcome = {"status": "error", "message": message}
        else:
            if direction == "there":
                where = f"{source} → {destination} ({plan.get('there')})"
            elif direction == "back":
                where = f"{destination} → {source} ({plan.get('back')})"
            else:
                where = step.format(source=source, destination=destination)
            if direction and step:
                where = f"{where}: {step}"
            outcome = {"status": "fail", "message": f"{where}: {message}", "direction": direction}
    elif back_s is None or "kvmprep smoke migrate there" not in results[source]:
        state = states.get(source)
        why = (state.message if state else None) or run_error or "did not complete"
        outcome = {"status": "error", "message": f"the live migration did not complete: {why}"}
    else:
        outcome = {"status": "pass", "message": ""}
    outcome.update(base, there_s=there_s, back_s=back_s)
    return {source: outcome, destination: outcome}
