"""The change report of ``kvmprep apply``: what the run changed on each host, one line a change.

The lines come from the tasks' own results during the run (``runner.RunState._changes``, the
``kvmprep_changes`` convention): no extra round trip. In check mode they are what a real run
would change. The terminal gets a "Changes" section after the summary table; the same list,
machine-readable, goes to ``changes.json`` in the run's artifacts, and to stdout with
``kvmprep apply --format json``.

Schema ``kvmprep.changes/1`` (a new major number only for an incompatible change; fields may
be added within a version)::

    {
      "schema": "kvmprep.changes/1",
      "kvmprep_version": "0.1.0",
      "check_mode": false,             # true: nothing was changed, each change is one that
                                       # a run without --check would make
      "exit_status": 0,                # the process exit status (see kvmprep --help)
      "hosts": {
        "<inventory hostname>": {
          "status": "ok" | "changed" | "failed" | "unreachable",
          "changes": [                 # in the order they were made; [] when none
            {"concern": "config", "text": "qemu.conf: dynamic_ownership 1 -> 0"},
            {"concern": "accounts", "text": "oneadmin added to kvm"}
          ]
        }
      }
    }

``concern`` names what the change is about: ``packages``, ``kvm_device``, ``accounts``,
``units``, ``sasl``, ``apparmor``, ``config``, ``files``, ``node_runtime``, ``restart`` from
the kvm_host role; for a task that did not describe its change, the short name of its module
(the text is then the task's name).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import kvmprep

if TYPE_CHECKING:
    from kvmprep.runner import HostState, RunResult

SCHEMA = "kvmprep.changes/1"
#: The file in the run's artifact directory.
ARTIFACT = "changes.json"
NO_CHANGE = "no change"


def _hosts(result: RunResult) -> tuple[HostState, ...]:
    # A host only the controller-side settings check looked at has nothing to report.
    return tuple(h for h in result.hosts if h.reached)


def render_text(result: RunResult, stream: TextIO) -> None:
    """The "Changes" section: each host, then its changes indented ("would: ..." in check
    mode), or "no change" on the host's line. Plain text: no colour, on a terminal or not."""
    hosts = _hosts(result)
    if not hosts:
        return
    title = "Changes:"
    if result.check_mode:
        title = "Changes (check mode: what a run without --check would change):"
    lines = ["", title]
    for host in hosts:
        if not host.changes:
            lines.append(f"{host.name}: {NO_CHANGE}")
            continue
        lines.append(f"{host.name}:")
        prefix = "would: " if result.check_mode else ""
        lines += [f"  {prefix}{change.text}" for change in host.changes]
    stream.write("\n".join(lines) + "\n")
    stream.flush()


def as_json(result: RunResult) -> dict[str, Any]:
    """The report as the ``kvmprep.changes/1`` document."""
    return {
        "schema": SCHEMA,
        "kvmprep_version": kvmprep.__version__,
        "check_mode": result.check_mode,
        "exit_status": int(result.exit_status),
        "hosts": {
            host.name: {
                "status": host.status.value.lower(),
                "changes": [change.as_dict() for change in host.changes],
            }
            for host in _hosts(result)
        },
    }


def dump(result: RunResult, stream: TextIO) -> None:
    json.dump(as_json(result), stream, indent=2)
    stream.write("\n")


def write_artifact(result: RunResult) -> Path | None:
    """``changes.json`` in the run's artifacts (where an AWX job or a ticket picks it up);
    None when the run left no artifact directory."""
    if not result.artifact_dir.is_dir():
        return None
    path = result.artifact_dir / ARTIFACT
    with path.open("w", encoding="utf-8") as stream:
        dump(result, stream)
    return path
