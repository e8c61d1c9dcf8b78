"""The one-line reason a failed or unreachable task gives, from its result.

The kvmprep CLI reads a host's failure from ansible-runner's events, the action plugin
kvmprep.kvm.check from the results audit.yml registered: both word it here, so a host that was
not evaluated says why in the same words in both reports (``kvmprep.check/1``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_MESSAGE_CHARS = 2000


def failure_message(res: Mapping[str, Any]) -> str:
    """The most useful one-paragraph explanation in a failed or unreachable task result."""
    if "censored" in res:  # no_log: keep Ansible's notice, never the data
        return str(res["censored"])
    message = str(res.get("msg") or res.get("message") or res.get("reason") or "").strip()
    if not message:
        failed_items = [r for r in res.get("results") or [] if isinstance(r, Mapping)]
        for item in failed_items:
            if item.get("failed") or item.get("unreachable"):
                return failure_message(item)
    stderr = str(res.get("stderr") or "").strip()
    if stderr and (not message or message == "non-zero return code"):
        message = f"{message}: {stderr}" if message else stderr
    if not message and res.get("rc") is not None:
        message = f"exit status {res['rc']}"
    message = message or "failed (no message)"
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "…"
    return message
