"""``kvmprep check``: run the facts playbook, then judge every host on the controller.

With ``smoke`` the hosts the static check reached then boot (and with ``migrate`` live-migrate)
a KVM domain for real (``kvmprep.smoke``); the results become the SMOKE-* controls.
"""

from __future__ import annotations

import importlib
import json
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from kvmprep import content, runner, smoke

# The judging code is the collection's (plugins/plugin_utils): importable once a checkout's
# ansible_collections directory is on sys.path (kvmprep depends on the collection).
content.import_collection()

from ansible_collections.kvmprep.kvm.plugins.plugin_utils import check_tasks
from kvmprep.exitcodes import ExitStatus, KvmprepError

if TYPE_CHECKING:
    from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.evaluate import (
        HostInput,
        HostReport,
    )

#: The tasks of playbooks/audit.yml whose results hold the facts (check_tasks names them).
PROBE_TASK = check_tasks.PROBE_TASK
FRONTEND_TASK = check_tasks.FRONTEND_TASK
API_TASK = check_tasks.API_TASK
#: The judges and the reports the run needs once it ends. Imported in a thread once
#: ansible-playbook is being started (about 0.2 s, the controls' catalog and the judge): begun
#: earlier, the thread would hold the interpreter while ansible_runner is imported and the
#: runner prepared, and delay the playbook's start by as much.
_AFTER_THE_RUN = (
    "ansible_collections.kvmprep.kvm.plugins.plugin_utils.check_inputs",
    "ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.catalog",
    "ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.evaluate",
    "kvmprep.report.table",
)


def import_judges() -> None:
    """Import what judging needs (run_playbook's ``meanwhile``); a failure is left to the same
    import after the run, which raises it where it can be reported."""
    for name in _AFTER_THE_RUN:
        try:
            importlib.import_module(name)
        except Exception:
            return


LOCAL_HOST = "localhost"


@dataclass(frozen=True)
class SmokeRun:
    run_id: str
    hosts: tuple[str, ...]
    run: runner.RunResult
    #: After an interruption: the cleanup playbook's run, and host -> why it was not cleaned.
    cleanup: runner.RunResult | None = None
    not_cleaned: Mapping[str, str] | None = None


@dataclass(frozen=True)
class CheckRun:
    reports: tuple[HostReport, ...]
    run: runner.RunResult
    smoke: SmokeRun | None = None

    @property
    def interrupted(self) -> bool:
        return self.run.interrupted or (self.smoke is not None and self.smoke.run.interrupted)


@contextmanager
def local_inventory(python: str = sys.executable) -> Iterator[Path]:
    """An inventory with this machine alone, reached without SSH, for ``check`` without -i."""
    inventory = {
        "kvm_hosts": {
            "hosts": {
                # The audit runs as whoever runs kvmprep here: no sudo (it may be a plain user).
                LOCAL_HOST: {
                    "ansible_connection": "local",
                    "ansible_python_interpreter": python,
                    "kvmprep_become": False,
                }
            }
        }
    }
    with tempfile.TemporaryDirectory(prefix="kvmprep-inventory-") as tmp:
        path = Path(tmp) / "local.yml"
        path.write_text(json.dumps(inventory), encoding="utf-8")  # JSON is YAML
        yield path


def run_check(
    inventories: Sequence[Path] | None,
    *,
    limit: str | None = None,
    verbosity: int = 0,
    output: TextIO | None = None,
    color: bool = False,
    observer: Callable[[runner.RunState], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    smoke_test: bool = False,
    migrate: bool = False,
    notify: Callable[[str], None] | None = None,
) -> CheckRun:
    """Audit the hosts of ``inventories`` (this machine when None).

    ``smoke_test``/``migrate``: then run the smoke test on the hosts the static check reached;
    ``notify`` is told when it starts and when an interruption's cleanup starts.
    """
    kwargs: dict[str, Any] = {
        "limit": limit,
        "verbosity": verbosity,
        "output": output,
        "color": color,
        "observer": observer,
        "cancel": cancel,
    }
    smoke_test = smoke_test or migrate
    if inventories:
        return _run(inventories, kwargs, smoke_test, migrate, notify)
    if migrate:
        raise KvmprepError(_MIGRATE_NEEDS_TWO.format(found="this machine alone (no -i)"))
    with local_inventory() as path:
        return _run([path], kwargs, smoke_test, migrate, notify)


_MIGRATE_NEEDS_TWO = (
    "--migrate needs two hosts (an inventory with at least two kvm_hosts, --limit matching "
    "two); found {found}"
)


def _run(
    inventories: Sequence[Path],
    kwargs: dict[str, Any],
    smoke_test: bool,
    migrate: bool,
    notify: Callable[[str], None] | None,
) -> CheckRun:
    playbook = content.playbook("audit")
    result = runner.run_playbook(
        playbook,
        inventories,
        capture=(PROBE_TASK, FRONTEND_TASK, API_TASK),
        meanwhile=import_judges,
        **kwargs,
    )
    from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.catalog import (
        CATALOG,
        smoke_controls,
    )
    from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.evaluate import (
        evaluate_fleet,
    )
    from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import Role

    inputs = host_inputs(result)
    if not smoke_test or result.interrupted or result.input_error:
        return CheckRun(reports=evaluate_fleet(inputs), run=result)
    hosts = [h for h in inputs if h.role is Role.KVM_HOST]
    if migrate and len(hosts) < 2:
        found = ", ".join(h.name for h in hosts) or "no host"
        raise KvmprepError(_MIGRATE_NEEDS_TWO.format(found=found))
    reached = tuple(h.name for h in hosts if h.facts is not None)
    cancel = kwargs.get("cancel")
    if not reached or (cancel is not None and cancel()):
        controls = (*CATALOG, *smoke_controls(migrate=migrate))
        return CheckRun(reports=evaluate_fleet(inputs, controls=controls), run=result)
    run_id = smoke.new_run_id()
    if notify is not None:
        notify(f"smoke test {smoke.domain_name(run_id)} on {', '.join(reached)}")
    smoke_kwargs = {k: v for k, v in kwargs.items() if k != "limit"}
    smoke_run = smoke.run_smoke(inventories, reached, run_id, migrate=migrate, **smoke_kwargs)
    if smoke_run.interrupted:
        if notify is not None:
            notify(f"interrupted: cleaning up {smoke.domain_name(run_id)} on {', '.join(reached)}")
        # Not cancellable: a second Ctrl-C must not leave the domain behind.
        cleanup_kwargs = {**smoke_kwargs, "cancel": None}
        cleanup = smoke.run_cleanup(inventories, reached, run_id, **cleanup_kwargs)
        outcome = SmokeRun(
            run_id,
            reached,
            smoke_run,
            cleanup=cleanup,
            not_cleaned=smoke.cleanup_failures(cleanup, reached),
        )
        return CheckRun(reports=(), run=result, smoke=outcome)
    facts = smoke.smoke_facts(smoke_run, reached, migrate=migrate, run_id=run_id)
    inputs = [
        replace(h, facts={**h.facts, "smoke": facts[h.name]})
        if h.facts is not None and h.name in facts
        else h
        for h in inputs
    ]
    controls = (*CATALOG, *smoke_controls(migrate=migrate))
    return CheckRun(
        reports=evaluate_fleet(inputs, controls=controls),
        run=result,
        smoke=SmokeRun(run_id, reached, smoke_run),
    )


def reports_from_run(result: runner.RunResult) -> tuple[HostReport, ...]:
    """Judge every host of the run together: fleet controls compare them."""
    from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.evaluate import (
        evaluate_fleet,
    )

    return evaluate_fleet(host_inputs(result))


def host_inputs(result: runner.RunResult) -> list[HostInput]:
    """The facts (or why there are none) of every machine of the static run, sorted by name
    (the collection's check_inputs: the action plugin kvmprep.kvm.check reads the same)."""
    from ansible_collections.kvmprep.kvm.plugins.plugin_utils import check_inputs

    return check_inputs.host_inputs(
        {h.name: result.task_results.get(h.name) or {} for h in result.hosts},
        unreachable={h.name for h in result.hosts if h.unreachable},
        messages={h.name: h.message for h in result.hosts if h.message},
    )


def exit_status(reports: Sequence[HostReport], *, strict: bool = False) -> ExitStatus:
    """2 on any FAIL (WARN too with strict), else 3 on any ERROR or unevaluated host, else 0."""
    from ansible_collections.kvmprep.kvm.plugins.plugin_utils import check_inputs

    return ExitStatus(check_inputs.exit_status(reports, strict=strict))
