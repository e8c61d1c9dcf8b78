"""``kvmprep check --format junit``: the audit as JUnit XML, for CI systems' test reports.

One ``<testsuite>`` per host (named after it) and one ``<testcase>`` per host and control,
``classname`` the host and ``name`` "<control id> <title>", so that CI lists a failed control
as a failed test of that host. The mapping of statuses:

    PASS   passed
    WARN   passed, the message in ``<system-out>`` (with --strict: ``<failure type="WARN">``)
    FAIL   ``<failure type="FAIL" message="...">`` with the message and the remediation
    SKIP   ``<skipped message="...">``
    ERROR  ``<error type="ERROR" message="...">`` (an unreachable host: every control, the reason)

The attributes are those of the JUnit schema CI systems read (Jenkins' junit-10.xsd, GitLab,
GitHub actions): tests, failures, errors, skipped and time on ``<testsuites>`` and each
``<testsuite>``. kvmprep does not time controls (one probe judges them all), so time is 0.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TextIO

from kvmprep import content

# The judging code is the collection's (plugins/plugin_utils): importable once a checkout's
# ansible_collections directory is on sys.path (kvmprep depends on the collection).
content.import_collection()

from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.evaluate import (
    ControlResult,
    HostReport,
    host_verdict,
)
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import Status

# XML 1.0 cannot carry these at all, not even as character references, and a message may
# quote anything a host printed.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _text(value: str) -> str:
    return _NOT_XML.sub("\ufffd", value)


def _outcome(result: ControlResult, *, strict: bool) -> str:
    """The JUnit outcome: "failure", "error", "skipped" or "passed"."""
    if result.status is Status.FAIL or (strict and result.status is Status.WARN):
        return "failure"
    if result.status is Status.ERROR:
        return "error"
    if result.status is Status.SKIP:
        return "skipped"
    return "passed"


def _detail(result: ControlResult) -> str:
    """The body of a failure: what was seen, then what to change."""
    return f"{result.message}\n\nremediation: {result.remediation}"


def case_element(result: ControlResult, host: str, *, strict: bool = False) -> ET.Element:
    control = result.control
    case = ET.Element(
        "testcase",
        {"classname": _text(host), "name": _text(f"{control.id} {control.title}"), "time": "0"},
    )
    outcome = _outcome(result, strict=strict)
    message = _text(result.message)
    if outcome == "failure":
        failure = ET.SubElement(case, "failure", {"message": message, "type": str(result.status)})
        failure.text = _text(_detail(result))
    elif outcome == "error":
        error = ET.SubElement(case, "error", {"message": message, "type": str(result.status)})
        error.text = message
    elif outcome == "skipped":
        ET.SubElement(case, "skipped", {"message": message})
    elif result.status is Status.WARN:
        # Passes, but a WARN is worth reading in the CI log.
        ET.SubElement(case, "system-out").text = _text(f"WARN: {result.message}")
    return case


def _counts(cases: Sequence[ET.Element]) -> dict[str, str]:
    def having(tag: str) -> int:
        return sum(1 for case in cases if case.find(tag) is not None)

    return {
        "tests": str(len(cases)),
        "failures": str(having("failure")),
        "errors": str(having("error")),
        "skipped": str(having("skipped")),
        "time": "0",
    }


def suite_element(report: HostReport, *, strict: bool = False, timestamp: str = "") -> ET.Element:
    cases = [case_element(r, report.name, strict=strict) for r in report.results]
    attrs = {"name": _text(report.name), **_counts(cases), "hostname": _text(report.name)}
    if timestamp:
        attrs["timestamp"] = timestamp
    suite = ET.Element("testsuite", attrs)
    properties = ET.SubElement(suite, "properties")
    verdict = host_verdict(report, strict=strict)
    ET.SubElement(properties, "property", {"name": "verdict", "value": verdict})
    if report.error:
        ET.SubElement(properties, "property", {"name": "error", "value": _text(report.error)})
    suite.extend(cases)
    return suite


def document(
    reports: Sequence[HostReport], *, strict: bool = False, generated: datetime | None = None
) -> ET.Element:
    # JUnit timestamps carry no zone (junit-10.xsd); they are UTC here.
    when = (generated or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    suites = [suite_element(r, strict=strict, timestamp=when) for r in reports]
    cases = [case for suite in suites for case in suite.iter("testcase")]
    root = ET.Element("testsuites", {"name": "kvmprep check", **_counts(cases)})
    root.extend(suites)
    return root


def render_junit(
    reports: Sequence[HostReport],
    stream: TextIO,
    *,
    strict: bool = False,
    generated: datetime | None = None,
) -> None:
    root = document(reports, strict=strict, generated=generated)
    ET.indent(root)
    stream.write('<?xml version="1.0" encoding="UTF-8"?>\n')
    stream.write(ET.tostring(root, encoding="unicode"))
    stream.write("\n")
