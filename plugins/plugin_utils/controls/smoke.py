"""SMOKE-*: judge the ``smoke`` fact that ``kvmprep check --smoke`` adds to a host's facts.

Only evaluated when the smoke test was asked for (see ``catalog.SMOKE``); the fact is built by
``kvmprep.smoke.smoke_facts`` from the results of playbooks/smoke.yml.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import Expect, Result, fact


def _s(value: Any) -> str:
    return f"{value:.2f} s" if isinstance(value, int | float) else "? s"


def _with_cleanup(result: Result, facts: Mapping[str, Any]) -> Result:
    """A cleanup that did not happen outweighs a boot that passed: the host is left changed."""
    cleanup = fact(facts, "smoke", "cleanup")
    if cleanup.get("status") == "pass":
        return result
    name = facts["smoke"].get("domain", "kvmprep-smoke-*")
    message = f"cleanup failed, {name} may be left: {cleanup.get('message')}"
    if result.message:
        message = f"{result.message}; {message}"
    return Result.fail(message)


def boot(facts: Mapping[str, Any], _expect: Expect) -> Result:
    part = fact(facts, "smoke", "boot")
    status = part.get("status")
    if status == "pass":
        result = Result.passed(
            f"disk {_s(part.get('disk_s'))}, start {_s(part.get('start_s'))}, "
            f"destroy {_s(part.get('stop_s'))}"
        )
    elif status == "fail":
        result = Result.fail(str(part.get("message")))
    else:
        result = Result.error(str(part.get("message")))
    return _with_cleanup(result, facts)


def migration(facts: Mapping[str, Any], _expect: Expect) -> Result:
    part = fact(facts, "smoke", "migration")
    if part is None:
        return Result.skip("not requested (kvmprep check --migrate)")
    status = part.get("status")
    if status == "pass":
        return Result.passed(
            f"{part['source']} → {part['destination']} {_s(part.get('there_s'))}, "
            f"back {_s(part.get('back_s'))} (qemu+{part.get('transport')})"
        )
    if status == "fail":
        return Result.fail(str(part.get("message")))
    if status == "skip":
        return Result.skip(str(part.get("message")))
    return Result.error(str(part.get("message")))
