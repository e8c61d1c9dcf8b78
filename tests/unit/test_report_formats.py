"""``kvmprep check --format junit|html``: the XML CI reads, the page a browser shows."""

from __future__ import annotations

import io
import json
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import FIXTURES

from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.catalog import CATALOG, for_role
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.evaluate import (
    ControlResult,
    HostInput,
    HostReport,
    evaluate_fleet,
    evaluate_host,
)
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import (
    Control,
    Expect,
    Result,
    Role,
    Severity,
    Status,
    VmmDefaults,
)
from kvmprep import check, runner
from kvmprep.cli import main
from kvmprep.exitcodes import ExitStatus
from kvmprep.report import html, junit

IDS = [c.id for c in for_role(Role.KVM_HOST)]  # a KVM host's row
ALL_IDS = [c.id for c in CATALOG]
WHEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
PASS, WARN, FAIL, SKIP, ERROR = Status
EVIL = "<script>alert('x')</script> & \"quoted\""


def _report(name: str, host: str) -> HostReport:
    """A host judged on a recorded probe, the way ``check`` judges a live one."""
    facts = json.loads((FIXTURES / "facts" / f"{name}.json").read_text(encoding="utf-8"))
    return evaluate_host(host, facts, Expect())


def _fleet() -> list[HostReport]:
    """Converged (2 WARN, 1 SKIP), drifted (3 FAIL, 2 WARN, 1 SKIP) and unreachable."""
    return [
        _report("debian12-converged", "kvm1.example"),
        _report("debian12-drift", "kvm2.example"),
        evaluate_host("kvm3.example", None, error="unreachable: ssh: connect timed out"),
    ]


def _facts(name: str) -> dict:
    return json.loads((FIXTURES / "facts" / f"{name}.json").read_text(encoding="utf-8"))


def _migration_fleet() -> list[HostReport]:
    """One run of a cluster mixing Debian 12 and 13 (OS MACHINE q35), another cluster of one
    host, and an unreachable host: the migration matrix has a blocked direction."""
    q35 = VmmDefaults(machine="q35", source="vmm_exec_kvm.conf")
    return list(
        evaluate_fleet(
            [
                HostInput("kvm1.example", _facts("debian12-converged"), Expect(), vmm=q35),
                HostInput("kvm2.example", _facts("debian12-drift"), Expect(), vmm=q35),
                HostInput("kvm4.example", _facts("debian13-converged"), Expect(), vmm=q35),
                HostInput("kvm5.example", _facts("debian13-converged"), Expect(cluster="edge")),
                HostInput("kvm3.example", None, error="unreachable: ssh: connect timed out"),
            ]
        )
    )


def _hostile() -> HostReport:
    """A host whose name, and a control whose title and message, are markup."""
    control = Control(
        id="X-001",
        title="a <b>bold</b> title",
        severity=Severity.LOW,
        rationale="r <i>",
        detection="d &amp;",
        remediation="fix </td></tr></table>",
        judge=lambda facts, expect: Result.fail(EVIL),
    )
    return evaluate_host('<img src="x">&host', {}, controls=(*CATALOG[:2], control))


# --- JUnit ---------------------------------------------------------------------------------


def _junit(reports: Sequence[HostReport], *, strict: bool = False) -> ET.Element:
    out = io.StringIO()
    junit.render_junit(reports, out, strict=strict, generated=WHEN)
    assert out.getvalue().startswith('<?xml version="1.0" encoding="UTF-8"?>\n')
    return ET.fromstring(out.getvalue().encode("utf-8"))


def _case(root: ET.Element, host: str, control_id: str) -> ET.Element:
    (case,) = [
        c
        for c in root.iter("testcase")
        if c.get("classname") == host and c.get("name", "").startswith(f"{control_id} ")
    ]
    return case


def _first(report: HostReport, status: Status) -> str:
    """The id of the first control with ``status`` (the catalog grows; ids are not pinned)."""
    return next(r.control.id for r in report.results if r.status is status)


def _tally(report: HostReport, *statuses: Status) -> int:
    return sum(report.count(s) for s in statuses)


def test_junit_structure_and_counts() -> None:
    reports = _fleet()
    root = _junit(reports)
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == [r.name for r in reports]
    for report, suite in zip(reports, suites, strict=True):
        cases = suite.findall("testcase")
        counted = tuple(
            sum(1 for c in cases if c.find(tag) is not None)
            for tag in ("failure", "error", "skipped")
        )
        attrs = tuple(int(suite.get(a, "-1")) for a in ("tests", "failures", "errors", "skipped"))
        expected = (len(report.results), *(report.count(s) for s in (FAIL, ERROR, SKIP)))
        assert attrs == (len(cases), *counted) == expected
        assert float(suite.get("time", "x")) == 0
        assert suite.get("timestamp") == "2025-01-02T03:04:05"
        assert [c.get("name", "").split()[0] for c in cases] == [
            r.control.id for r in report.results
        ]
        assert {c.get("classname") for c in cases} == {report.name}
    unreachable = reports[2]
    assert int(suites[0].get("failures", "-1")) == 0
    assert int(suites[1].get("failures", "-1")) >= 3  # LV-001, LV-005, USR-002 at least
    assert int(suites[2].get("errors", "-1")) == len(unreachable.results) == len(IDS)
    totals = tuple(int(root.get(a, "-1")) for a in ("tests", "failures", "errors", "skipped"))
    assert totals == (
        sum(len(r.results) for r in reports),
        *(sum(r.count(s) for r in reports) for s in (FAIL, ERROR, SKIP)),
    )
    assert float(root.get("time", "x")) == 0


def test_junit_outcomes() -> None:
    converged = (reports := _fleet())[0]
    root = _junit(reports)
    assert _case(root, "kvm1.example", "KVM-001").get("name") == (
        "KVM-001 CPU virtualization extensions"
    )
    failure = _case(root, "kvm2.example", "LV-001").find("failure")
    assert failure is not None
    assert failure.get("type") == "FAIL"
    assert failure.get("message")
    remediation = next(c.remediation for c in CATALOG if c.id == "LV-001")
    assert failure.get("message", "") in (failure.text or "")
    assert f"remediation: {remediation}" in (failure.text or "")
    # WARN passes, with its message where CI shows a test's output.
    warn = _case(root, "kvm1.example", _first(converged, WARN))
    assert [child.tag for child in warn] == ["system-out"]
    assert (warn.findtext("system-out") or "").startswith("WARN: ")
    skipped = _case(root, "kvm1.example", _first(converged, SKIP)).find("skipped")
    assert skipped is not None
    assert skipped.get("message")
    assert list(_case(root, "kvm1.example", _first(converged, PASS))) == []  # nothing to say
    # An unreachable host: every control an error carrying the reason.
    for case in root.iterfind("testsuite[@name='kvm3.example']/testcase"):
        error = case.find("error")
        assert error is not None
        assert error.get("message") == "unreachable: ssh: connect timed out"


def test_junit_strict_makes_warn_a_failure() -> None:
    converged = (reports := _fleet())[0]
    root = _junit(reports, strict=True)
    assert int(root.get("failures", "-1")) == sum(_tally(r, FAIL, WARN) for r in reports)
    case = _case(root, "kvm1.example", _first(converged, WARN))
    failure = case.find("failure")
    assert failure is not None
    assert failure.get("type") == "WARN"
    assert case.find("system-out") is None
    values = [
        p.get("value")
        for p in root.iterfind("testsuite/properties/property")
        if p.get("name") == "verdict"
    ]
    assert values == ["non-compliant", "non-compliant", "not evaluated"]


def test_junit_escapes_markup_and_drops_what_xml_cannot_carry() -> None:
    hostile = _hostile()
    garbled = HostReport(
        "h", tuple(ControlResult(r.control, r.status, "\x1b[31mred\x00") for r in hostile.results)
    )
    root = _junit([hostile, garbled])
    case = _case(root, '<img src="x">&host', "X-001")
    assert case.get("name") == "X-001 a <b>bold</b> title"
    assert (case.findtext("failure") or "").startswith(EVIL)
    failure = _case(root, "h", "X-001").find("failure")
    assert failure is not None
    assert failure.get("message") == "\ufffd[31mred\ufffd"


# --- HTML: static checks -------------------------------------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


class _Strict(HTMLParser):
    """Records nesting errors html.parser tolerates, and every URL-bearing attribute."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.urls: list[tuple[str, str]] = []
        self.tags: Counter[str] = Counter()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        self.urls += [(k, v or "") for k, v in attrs if k in ("src", "href", "srcset", "action")]
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _html(reports: Sequence[HostReport], *, strict: bool = False) -> str:
    out = io.StringIO()
    html.render_html(reports, out, strict=strict, generated=WHEN)
    return out.getvalue()


def _parse(page: str) -> _Strict:
    parser = _Strict()
    parser.feed(page)
    parser.close()
    assert parser.errors == []
    assert parser.stack == []
    return parser


def test_html_is_well_formed_and_complete() -> None:
    reports = _fleet()
    page = _html(reports)
    assert page.startswith("<!DOCTYPE html>")
    parsed = _parse(page)
    text = "".join(parsed.text)
    for report in reports:
        assert report.name in text
    for control in for_role(Role.KVM_HOST):
        assert control.id in text
        assert control.remediation in text
    assert "unreachable: ssh: connect timed out" in text
    assert "2025-01-02 03:04 UTC" in text
    assert "Fleet: non-compliant (3 hosts)" in text
    # Every status is spelled out, not only coloured: 3 hosts x every control in the matrix.
    start = page.index('<table class="matrix"')
    matrix = page[start : page.index("</table>", start)]
    labels = re.findall(r"</span> (PASS|WARN|FAIL|SKIP|ERROR)</a>", matrix)
    assert len(labels) == 3 * len(IDS)
    assert Counter(labels) == Counter(str(r.status) for report in reports for r in report.results)


def test_html_cells_link_to_their_details() -> None:
    page = _html(_fleet())
    parsed = _parse(page)
    anchors = set(re.findall(r'\sid="([^"]+)"', page))
    links = [url for name, url in parsed.urls if name == "href"]
    assert len(links) >= 3 * len(IDS) + len(IDS)
    for url in links:
        assert url.startswith("#"), url
        assert url[1:] in anchors, url
    assert 'href="#ctl-LV-001-h1"' in page
    assert 'id="ctl-LV-001-h1"' in page


def test_html_is_self_contained() -> None:
    page = _html(_fleet())
    parsed = _parse(page)
    assert all(url.startswith("#") for _, url in parsed.urls), parsed.urls
    assert not {"script", "link", "img", "iframe", "object", "embed"} & set(parsed.tags)
    for forbidden in ("http://", "https://", "@import", "url(", "//fonts."):
        assert forbidden not in page


def test_html_escapes_everything() -> None:
    page = _html([_hostile()])
    parsed = _parse(page)
    assert "<script" not in page
    for markup in ("<b>bold", "<i>", '<img src="x">'):
        assert markup not in page
    assert "&lt;script&gt;" in page
    text = "".join(parsed.text)
    assert EVIL in text
    assert '<img src="x">&host' in text
    assert "fix </td></tr></table>" in text
    assert parsed.tags["img"] == parsed.tags["b"] == 0


def test_html_strict_and_empty() -> None:
    strict = _html(_fleet()[:1], strict=True)
    assert "strict: WARN counts as non-compliant" in strict
    assert "Fleet: non-compliant (1 host)" in strict
    assert "Fleet: compliant (1 host)" in _html(_fleet()[:1])
    _parse(_html([]))


# --- the CLI -------------------------------------------------------------------------------


@pytest.fixture
def audited(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[HostReport]:
    """``check`` without Ansible: the run returns the fleet's reports."""
    reports = _fleet()
    result = runner.RunResult(hosts=(), artifact_dir=tmp_path, runner_status="successful", rc=0)
    monkeypatch.setattr(
        check, "run_check", lambda *a, **k: check.CheckRun(reports=tuple(reports), run=result)
    )
    return reports


@pytest.mark.parametrize("fmt", ["junit", "html"])
def test_cli_writes_to_stdout(
    fmt: str, audited: list[HostReport], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "--format", fmt]) == ExitStatus.FAILED
    captured = capsys.readouterr()
    if fmt == "junit":
        assert int(ET.fromstring(captured.out).get("tests", "0")) == 3 * len(IDS)
    else:  # a page for the three hosts (an empty one would parse too)
        assert captured.out.startswith("<!DOCTYPE html>")
        assert "Fleet: non-compliant (3 hosts)" in "".join(_parse(captured.out).text)
    # The terminal keeps the summary, not the control lines.
    assert "fleet: 3 hosts, 1 compliant, 1 non-compliant, 1 not evaluated" in captured.err
    assert "LV-001" not in captured.err


@pytest.mark.parametrize("fmt", ["junit", "html"])
def test_cli_writes_to_a_file(
    fmt: str, audited: list[HostReport], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / f"report.{fmt}"
    assert main(["check", "--format", fmt, "--strict", "-o", str(out)]) == ExitStatus.FAILED
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"report written to {out}" in captured.err
    assert "kvm1.example: non-compliant" in captured.err  # --strict reached the summary
    text = out.read_text(encoding="utf-8")
    if fmt == "junit":
        assert ET.fromstring(text).find(".//failure[@type='WARN']") is not None
    else:
        assert "strict: WARN counts as non-compliant" in text


# --- HTML in a real browser ----------------------------------------------------------------


def _chromium() -> str:
    # Not a skip: tests/run-all.sh installs chromium, so its absence is a broken setup.
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("chromium is not installed (apt-get install chromium); run-all.sh installs it")


def _browse(page: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    command = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
        page.as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def _png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and the unfiltered rows of an 8-bit RGB(A) PNG, like Chromium writes."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    assert (depth, interlace) == (8, 0)
    assert colour in (2, 6)
    bpp = 4 if colour == 6 else 3
    idat, pos = b"", 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        if data[pos + 4 : pos + 8] == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        kind, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        _unfilter(kind, line, prev, bpp)
        rows.append(bytes(line))
        prev = line
    return width, height, rows


def _unfilter(kind: int, line: bytearray, prev: bytearray, bpp: int) -> None:
    if kind == 0:
        return
    if kind == 2:
        line[:] = bytes((a + b) & 0xFF for a, b in zip(line, prev, strict=True))
        return
    for i in range(len(line)):
        left = line[i - bpp] if i >= bpp else 0
        up = prev[i]
        if kind == 1:
            line[i] = (line[i] + left) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + ((left + up) >> 1)) & 0xFF
        else:  # 4, Paeth
            corner = prev[i - bpp] if i >= bpp else 0
            p = left + up - corner
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
            pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
            line[i] = (line[i] + pred) & 0xFF


def _colours(rows: Sequence[bytes], bpp: int) -> Counter[tuple[int, int, int]]:
    counts: Counter[tuple[int, int, int]] = Counter()
    for row in rows:
        for x in range(0, len(row), bpp):
            counts[(row[x], row[x + 1], row[x + 2])] += 1
    return counts


def _hex(value: str) -> tuple[int, int, int]:
    return (int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16))


class _Matrix(HTMLParser):
    """Counts what the browser's DOM has in table#matrix: body rows and cells per row."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0  # tables open since #matrix, 0 when outside it
        self.in_body = False
        self.rows: list[list[str]] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.scripts += tag == "script"
        if tag == "table" and (self.depth or found.get("id") == "matrix"):
            self.depth += 1
        elif self.depth == 1 and tag == "tbody":
            self.in_body = True
        elif self.depth == 1 and self.in_body and tag == "tr":
            self.rows.append([])
        elif self.depth == 1 and self.in_body and tag in ("td", "th"):
            self.rows[-1].append(found.get("class") or tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self.depth:
            self.depth -= 1
        elif tag == "tbody":
            self.in_body = False


class _Migration(HTMLParser):
    """The cells of every table.migration in the browser's DOM, row by row."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.inside = False
        self.in_body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "table" and found.get("class") == "migration":
            self.inside = True
            self.tables.append([])
        elif self.inside and tag == "tbody":
            self.in_body = True
        elif self.in_body and tag == "tr":
            self.tables[-1].append([])
        elif self.in_body and tag in ("td", "th"):
            self.tables[-1][-1].append(found.get("class") or tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self.inside:
            self.inside = self.in_body = False


def test_html_migration_matrix() -> None:
    page = _html(_migration_fleet())
    parsed = _parse(page)
    text = "".join(parsed.text)
    assert "Live migration by cluster" in text
    assert "Cluster default" in text
    assert "Cluster edge" in text
    assert "machine type pc-q35-10.0 missing on kvm1.example" in text
    assert "OS MACHINE to set: pc-q35-7.2" in text
    assert (
        "In no cluster (not evaluated, or without qemu facts: their cluster or their QEMU is "
        "unknown): kvm3.example" in text
    )
    # The fix names the value, under the finding.
    assert (
        "fix: kvmprep apply with the front-end role sets OS MACHINE in vmm_exec_kvm.conf "
        "to pc-q35-7.2" in text
    )
    # No migration section for a run of one host: there is nowhere to migrate.
    assert "Live migration" not in _html(_migration_fleet()[:1])


def test_html_in_headless_chromium(tmp_path: Path) -> None:
    reports = [*_migration_fleet(), _hostile()]
    page = tmp_path / "report.html"
    page.write_text(_html(reports), encoding="utf-8")
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><title>blank</title>", encoding="utf-8")

    shots = {}
    for name, source in (("report", page), ("blank", blank)):
        shots[name] = tmp_path / f"{name}.png"
        _browse(source, tmp_path, f"--screenshot={shots[name]}", "--window-size=1400,1000")
        assert shots[name].is_file()
    width, height, rows = _png_pixels(shots["report"])
    assert (width, height) == (1400, 1000)
    bpp = len(rows[0]) // width
    colours = _colours(rows, bpp)
    assert len(_colours(_png_pixels(shots["blank"])[2], bpp)) == 1  # what blank looks like
    assert shots["report"].stat().st_size > 5 * shots["blank"].stat().st_size
    assert len(colours) > 50
    # The status fills were painted (so the CSS applied), and the dark masthead.
    for var in ("pass", "warn", "fail", "error"):
        css = re.search(rf"--{var}-bg: (#[0-9a-f]{{6}})", html.CSS)
        assert css is not None
        assert colours[_hex(css.group(1))] > 500, var
    assert colours[_hex("#102a43")] > 10_000

    dom = _browse(page, tmp_path, "--dump-dom").stdout
    matrix = _Matrix()
    matrix.feed(dom)
    controls = {r.control.id for report in reports for r in report.results}
    assert len(matrix.rows) == len(controls)  # the catalog, and X-001 of the hostile host
    for row in matrix.rows:
        assert row[0] == "th"
        assert row[1].startswith("sev sev-")
        assert row[2:] == ["cell"] * len(reports)
    assert matrix.scripts == 0  # the escaped <script> stayed text
    assert "&lt;script&gt;alert" in dom
    # One migration matrix per cluster of two hosts or more: a row per host VMs start on,
    # a cell per host they move to (the host itself greyed out).
    migration = _Migration()
    migration.feed(dom)
    (default,) = migration.tables  # cluster "edge" has one host: no matrix
    assert len(default) == 3
    for i, row in enumerate(default):
        assert row[0] == "th"
        assert row[1:] == ["link" if j != i else "self" for j in range(3)]
    assert "machine type pc-q35-10.0 missing on kvm1.example" in dom
