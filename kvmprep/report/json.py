"""The machine-readable report of ``kvmprep check`` (``--format json``): a stable contract.

Schema ``kvmprep.check/1`` (a new major number only for an incompatible change; fields may
be added within a version)::

    {
      "schema": "kvmprep.check/1",
      "kvmprep_version": "0.1.0",
      "strict": false,                 # --strict: WARN counts as non-compliant
      "exit_status": 2,                # the process exit status (see kvmprep --help)
      "hosts": {
        "<inventory hostname>": {
          "verdict": "compliant" | "non-compliant" | "not evaluated",
          "error": null | "<why the host could not be evaluated (unreachable, probe failed)>",
          "counts": {"PASS": 11, "WARN": 1, "FAIL": 1, "SKIP": 2, "ERROR": 0},
          "controls": {
            "<control id>": {
              "status": "PASS" | "WARN" | "FAIL" | "SKIP" | "ERROR",
              "message": "<one-line hint: the observed value or the reason>",
              "title": "...", "severity": "critical" | "high" | "medium" | "low" | "info",
              "remediation": "<the change kvmprep apply makes, or the manual step>"
            }
          }
        }
      },
      "summary": {
        "hosts": 2,
        "compliant": ["<host>", ...], "non_compliant": [...], "not_evaluated": [...],
        "counts": {"PASS": 22, "WARN": 2, "FAIL": 2, "SKIP": 4, "ERROR": 0}
      }
    }

Hosts and controls keep the order of the run (hosts sorted by name, controls in catalog
order). Every registered control appears for every host: an unreachable host has every
control with status ERROR and the reason as message. The smoke controls appear only when
requested: SMOKE-001 with ``check --smoke``, SMOKE-001 and SMOKE-002 with ``--migrate``;
without those options a report has no SMOKE-* key. ``kvmprep controls --format json``
gives the catalog (rationale, detection, remediation) for the control ids.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TextIO

from kvmprep.controls.evaluate import HostReport, Verdict, host_verdict
from kvmprep.controls.model import Control, Status

SCHEMA = "kvmprep.check/1"
CATALOG_SCHEMA = "kvmprep.controls/1"


def _counts(reports: Sequence[HostReport]) -> dict[str, int]:
    return {str(s): sum(r.count(s) for r in reports) for s in Status}


def document(
    reports: Sequence[HostReport], *, strict: bool = False, exit_status: int = 0
) -> dict[str, Any]:
    import kvmprep

    verdicts = {r.name: host_verdict(r, strict=strict) for r in reports}
    hosts = {
        report.name: {
            "verdict": verdicts[report.name],
            "error": report.error,
            "counts": _counts([report]),
            "controls": {
                r.control.id: {
                    "status": str(r.status),
                    "message": r.message,
                    "title": r.control.title,
                    "severity": str(r.control.severity),
                    "remediation": r.control.remediation,
                }
                for r in report.results
            },
        }
        for report in reports
    }

    def named(verdict: str) -> list[str]:
        return [name for name, v in verdicts.items() if v == verdict]

    return {
        "schema": SCHEMA,
        "kvmprep_version": kvmprep.__version__,
        "strict": strict,
        "exit_status": int(exit_status),
        "hosts": hosts,
        "summary": {
            "hosts": len(reports),
            "compliant": named(Verdict.COMPLIANT),
            "non_compliant": named(Verdict.NON_COMPLIANT),
            "not_evaluated": named(Verdict.NOT_EVALUATED),
            "counts": _counts(reports),
        },
    }


def render_json(
    reports: Sequence[HostReport], stream: TextIO, *, strict: bool = False, exit_status: int = 0
) -> None:
    json.dump(document(reports, strict=strict, exit_status=exit_status), stream, indent=2)
    stream.write("\n")


def render_catalog(controls: Sequence[Control], stream: TextIO) -> None:
    """``kvmprep controls --format json``: {"schema": ..., "controls": [{id, title, ...}]}."""
    json.dump(
        {"schema": CATALOG_SCHEMA, "controls": [c.as_dict() for c in controls]}, stream, indent=2
    )
    stream.write("\n")
