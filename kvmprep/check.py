"""``kvmprep check``: run the facts playbook, then judge every host on the controller."""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from kvmprep import content, runner
from kvmprep.controls.evaluate import HostInput, HostReport, evaluate_fleet
from kvmprep.controls.model import Expect, Status
from kvmprep.exitcodes import ExitStatus

#: The task of playbooks/check.yml whose result holds the facts.
PROBE_TASK = "kvmprep check facts"
LOCAL_HOST = "localhost"


@dataclass(frozen=True)
class CheckRun:
    reports: tuple[HostReport, ...]
    run: runner.RunResult


@contextmanager
def local_inventory(python: str = sys.executable) -> Iterator[Path]:
    """An inventory with this machine alone, reached without SSH, for ``check`` without -i."""
    inventory = {
        "kvm_hosts": {
            "hosts": {
                LOCAL_HOST: {"ansible_connection": "local", "ansible_python_interpreter": python}
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
) -> CheckRun:
    """Audit the hosts of ``inventories`` (this machine when None)."""
    kwargs: dict[str, Any] = {
        "limit": limit,
        "verbosity": verbosity,
        "output": output,
        "color": color,
        "observer": observer,
        "cancel": cancel,
        "library_path": content.library_path(),
        "capture": (PROBE_TASK,),
    }
    playbook = content.playbook("check")
    if inventories:
        result = runner.run_playbook(playbook, inventories, **kwargs)
    else:
        with local_inventory() as path:
            result = runner.run_playbook(playbook, [path], **kwargs)
    return CheckRun(reports=reports_from_run(result), run=result)


def reports_from_run(result: runner.RunResult) -> tuple[HostReport, ...]:
    """Judge every host of the run together: fleet controls compare them."""
    inputs = []
    for host in sorted(result.hosts, key=lambda h: h.name):
        res: Mapping[str, Any] | None = (result.task_results.get(host.name) or {}).get(PROBE_TASK)
        if res is None or not isinstance(res.get("probe"), Mapping):
            why = host.message or "the facts probe did not run"
            prefix = "unreachable" if host.unreachable else "probe failed"
            inputs.append(HostInput(host.name, None, error=f"{prefix}: {why}"))
            continue
        expect = Expect.from_vars(res.get("expect") or {})
        inputs.append(HostInput(host.name, res["probe"], expect))
    return evaluate_fleet(inputs)


def exit_status(reports: Sequence[HostReport], *, strict: bool = False) -> ExitStatus:
    """2 on any FAIL (WARN too with strict), else 3 on any ERROR or unevaluated host, else 0."""
    failing = {Status.FAIL, Status.WARN} if strict else {Status.FAIL}
    statuses = {r.status for report in reports for r in report.results}
    if statuses & failing:
        return ExitStatus.FAILED
    if Status.ERROR in statuses or any(report.error for report in reports):
        return ExitStatus.UNREACHABLE
    return ExitStatus.OK
