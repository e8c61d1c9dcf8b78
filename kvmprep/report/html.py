"""``kvmprep check --format html``: the fleet report as one self-contained HTML page.

The page is meant to be mailed, attached to a ticket or archived, and opened anywhere: inline
CSS only, no script, no image, font or style sheet from elsewhere. It has a summary (verdicts
and counts), a migration matrix per OpenNebula cluster (which host can receive VMs started on
which, and why not), a hosts-by-controls matrix whose cells link to the details of the control
(its rationale, detection and remediation, and every host's message). A status is always
spelled out next to its colour, so the matrices read the same in greyscale, in print and to a
screen reader. Everything that comes from a host or the catalog is escaped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from typing import TextIO

from kvmprep import content

# The judging code is the collection's (plugins/plugin_utils): importable once a checkout's
# ansible_collections directory is on sys.path (kvmprep depends on the collection).
content.import_collection()

from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.evaluate import (
    ControlResult,
    HostReport,
    Verdict,
    clusters_of,
    host_verdict,
)
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.migration import (
    ClusterMigration,
    Link,
)
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import Control, Status

SYMBOL = {
    Status.PASS: "\u2713",  # check mark
    Status.WARN: "!",
    Status.FAIL: "\u2717",  # ballot x
    Status.SKIP: "\u2013",  # en dash
    Status.ERROR: "?",
}
#: A migration link looks like the status of the same gravity.
LINK_STATUS = {
    Link.OK: Status.PASS,
    Link.AT_RISK: Status.WARN,
    Link.BLOCKED: Status.FAIL,
    Link.UNKNOWN: Status.ERROR,
}
VERDICT_CLASS = {
    Verdict.COMPLIANT: "v-ok",
    Verdict.NON_COMPLIANT: "v-bad",
    Verdict.NOT_EVALUATED: "v-unknown",
}

# Colours are chosen for a contrast of at least 4.5:1 between each label and its background.
CSS = """
:root {
  color-scheme: light;
  --ink: #1f2933; --muted: #52606d; --line: #d9dee4; --paper: #ffffff; --band: #f5f7fa;
  --accent: #1d4ed8;
  --pass-bg: #d3f0dc; --pass-fg: #14532d;
  --warn-bg: #fdefc3; --warn-fg: #713f12;
  --fail-bg: #f9d0cd; --fail-fg: #8f1313;
  --skip-bg: #e8ebef; --skip-fg: #3e4c59;
  --error-bg: #e9dcfb; --error-fg: #5b21b6;
}
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body {
  margin: 0; background: var(--band); color: var(--ink);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
    "DejaVu Sans", sans-serif;
}
a { color: var(--accent); }
code, .id { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono",
  monospace; font-size: .92em; }
.page { max-width: 1280px; margin: 0 auto; padding: 0 24px 48px; }
.masthead { background: #102a43; color: #f0f4f8; padding: 28px 0 24px; }
.masthead .page { padding-bottom: 0; }
.masthead .kicker { margin: 0; font-size: 12px; letter-spacing: .12em; text-transform: uppercase;
  color: #9fb3c8; }
.masthead h1 { margin: 4px 0 8px; font-size: 26px; font-weight: 650; line-height: 1.25; }
.masthead .meta { margin: 0; color: #bcccdc; font-size: 13px; }
.masthead .meta span + span::before { content: "\\00b7"; margin: 0 .6em; color: #829ab1; }
.fleet-verdict { display: inline-block; margin-top: 14px; padding: 4px 12px; border-radius: 4px;
  font-weight: 650; font-size: 14px; }
.fleet-verdict.v-ok { background: var(--pass-bg); color: var(--pass-fg); }
.fleet-verdict.v-bad { background: var(--fail-bg); color: var(--fail-fg); }
.fleet-verdict.v-unknown { background: var(--error-bg); color: var(--error-fg); }
section { margin-top: 28px; }
h2 { font-size: 18px; margin: 0 0 12px; padding-bottom: 6px; border-bottom: 2px solid var(--line); }
.panel { background: var(--paper); border: 1px solid var(--line); border-radius: 6px;
  padding: 16px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px;
  margin: 0; padding: 0; list-style: none; }
.card { background: var(--paper); border: 1px solid var(--line); border-left-width: 5px;
  border-radius: 6px; padding: 10px 14px; }
.card .num { display: block; font-size: 28px; font-weight: 700; line-height: 1.1; }
.card .lbl { color: var(--muted); font-size: 13px; }
.card.v-ok { border-left-color: #2f8f4e; }
.card.v-bad { border-left-color: #c62828; }
.card.v-unknown { border-left-color: #7c3aed; }
.card.total { border-left-color: #486581; }
.counts { display: flex; flex-wrap: wrap; gap: 8px; margin: 14px 0 0; padding: 0;
  list-style: none; }
.st { display: inline-block; min-width: 5.2em; padding: 1px 8px; border-radius: 4px;
  font-weight: 650; font-size: 13px; white-space: nowrap; text-align: center; }
.st-pass { background: var(--pass-bg); color: var(--pass-fg); }
.st-warn { background: var(--warn-bg); color: var(--warn-fg); }
.st-fail { background: var(--fail-bg); color: var(--fail-fg); }
.st-skip { background: var(--skip-bg); color: var(--skip-fg); }
.st-error { background: var(--error-bg); color: var(--error-fg); }
.st-none { background: transparent; color: var(--muted); font-weight: 400; }
.sym { display: inline-block; width: 1em; }
table { border-collapse: collapse; }
.grid { width: 100%; background: var(--paper); font-size: 14px; }
.grid th, .grid td { padding: 7px 10px; border-bottom: 1px solid var(--line); text-align: left;
  vertical-align: top; }
.grid thead th { background: #eef2f6; font-size: 12px; text-transform: uppercase;
  letter-spacing: .04em; color: var(--muted); }
.num-col { text-align: right; font-variant-numeric: tabular-nums; }
.grid td.num-col, .grid th.num-col { text-align: right; }
.verdict { font-weight: 650; white-space: nowrap; }
.verdict.v-ok { color: var(--pass-fg); }
.verdict.v-bad { color: var(--fail-fg); }
.verdict.v-unknown { color: var(--error-fg); }
.scroll { overflow-x: auto; border: 1px solid var(--line); border-radius: 6px;
  background: var(--paper); }
.scroll:focus { outline: 2px solid var(--accent); outline-offset: 2px; }
.matrix { font-size: 14px; min-width: 100%; }
.matrix th, .matrix td { border-bottom: 1px solid var(--line); padding: 6px 8px;
  vertical-align: middle; }
.matrix td + td, .matrix th + th { border-left: 1px solid var(--line); }
.matrix thead th { background: #eef2f6; position: sticky; top: 0; font-size: 13px;
  text-align: center; vertical-align: bottom; }
.matrix thead th.host { min-width: 7.5em; max-width: 14em; overflow-wrap: break-word; }
.matrix thead th.host .verdict { display: block; font-size: 11px; text-transform: uppercase;
  letter-spacing: .04em; }
.matrix thead th:first-child, .matrix thead th.sev-h { text-align: left; }
.matrix tbody th { text-align: left; font-weight: 400; background: var(--paper);
  position: sticky; left: 0; z-index: 1; min-width: 15em; max-width: 24em;
  box-shadow: 1px 0 0 var(--line); }
.matrix tbody th .id { font-weight: 700; margin-right: .5em; white-space: nowrap; }
.matrix tbody tr:hover th, .matrix tbody tr:hover td.sev { background: #f0f4f8; }
.matrix td.cell { padding: 3px; text-align: center; }
.matrix td.cell a { display: block; padding: 5px 6px; border-radius: 3px; text-decoration: none;
  font-weight: 650; font-size: 13px; white-space: nowrap; }
.matrix td.cell a:hover, .matrix td.cell a:focus { outline: 2px solid var(--ink);
  outline-offset: -2px; }
.sev { font-size: 12px; font-weight: 650; text-transform: uppercase; letter-spacing: .04em;
  white-space: nowrap; }
.sev-critical { color: #8f1313; }
.sev-high { color: #9a3412; }
.sev-medium { color: #854d0e; }
.sev-low { color: #3e4c59; }
.sev-info { color: #52606d; }
.legend { display: flex; flex-wrap: wrap; gap: 6px 14px; align-items: center; margin: 0 0 10px;
  padding: 0; list-style: none; color: var(--muted); font-size: 13px; }
.control { background: var(--paper); border: 1px solid var(--line); border-radius: 6px;
  margin: 0 0 16px; padding: 16px 18px; scroll-margin-top: 12px; }
.control:target { border-color: var(--accent); box-shadow: 0 0 0 2px var(--accent); }
.control h3 { margin: 0; font-size: 16px; }
.control h3 .id { margin-right: .5em; }
.control .sub { margin: 2px 0 10px; display: flex; flex-wrap: wrap; gap: 6px 12px;
  align-items: center; }
.control dl { display: grid; grid-template-columns: 9em 1fr; gap: 4px 14px; margin: 0 0 12px; }
.control dt { font-weight: 650; color: var(--muted); }
.control dd { margin: 0; }
.control .results td.msg { white-space: pre-wrap; overflow-wrap: anywhere; }
.control .results tr:target td, .control .results tr:target th { background: #fff7d6; }
.control .results tr { scroll-margin-top: 40px; }
.control .results th[scope=row] { font-weight: 650; overflow-wrap: anywhere; width: 16em; }
.control .results td.status-col { width: 7.5em; }
.back { margin: 8px 0 0; font-size: 13px; }
.host-error { color: var(--error-fg); overflow-wrap: break-word; }
.hosts td.note { min-width: 18em; }
.cluster { background: var(--paper); border: 1px solid var(--line); border-radius: 6px;
  margin: 0 0 16px; padding: 16px 18px; }
.cluster h3 { margin: 0 0 6px; font-size: 16px; }
.cluster h3 .count { color: var(--muted); font-weight: 400; font-size: 14px;
  margin-right: .4em; }
.cluster .verdict-line { margin: 0 0 8px; font-weight: 600; overflow-wrap: anywhere; }
.cluster .facts { margin: 0 0 12px; color: var(--muted); font-size: 13px; }
.cluster .facts strong { color: var(--ink); }
.migration { font-size: 13px; }
.migration th, .migration td { border: 1px solid var(--line); padding: 6px 8px;
  vertical-align: top; }
.migration thead th { background: #eef2f6; text-align: center; }
.migration thead th.corner { text-align: left; font-weight: 400; color: var(--muted); }
.migration tbody th { text-align: left; background: var(--paper); white-space: nowrap; }
.migration td.link { min-width: 9em; max-width: 18em; }
.migration td.self { background: var(--band); color: var(--muted); text-align: center; }
.migration .why { display: block; margin-top: 4px; color: var(--ink);
  overflow-wrap: anywhere; }
.versions { margin-top: 12px; font-size: 13px; }
.versions th, .versions td { padding: 4px 12px 4px 0; text-align: left; }
.unassigned { color: var(--muted); font-size: 13px; }
.fix { display: block; margin-top: 4px; color: var(--muted); }
footer { margin-top: 36px; color: var(--muted); font-size: 12px; }
.visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden;
  clip: rect(0 0 0 0); white-space: nowrap; }
@media (max-width: 700px) {
  .page { padding: 0 12px 32px; }
  .masthead h1 { font-size: 21px; }
  .control dl { grid-template-columns: 1fr; }
  .control dd { margin-bottom: 6px; }
  .matrix tbody th { min-width: 11em; }
  .hide-narrow { display: none; }
}
@media print {
  @page { margin: 12mm; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  body { background: #fff; font-size: 10pt; }
  .page { max-width: none; padding: 0; }
  .masthead { background: #fff; color: var(--ink); border-bottom: 2px solid var(--ink);
    padding: 0 0 8px; }
  .masthead .kicker, .masthead .meta { color: var(--muted); }
  .scroll { overflow: visible; border: 0; }
  .matrix thead th, .matrix tbody th { position: static; }
  a { color: inherit; text-decoration: none; }
  .back { display: none; }
  .control { break-inside: avoid; }
  tr { break-inside: avoid; }
}
"""


def _slug(value: str) -> str:
    """An ``id`` fragment: HTML allows nearly anything, but a plain one is safe in a URL."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", value).strip("-") or "x"


def control_anchor(control: Control) -> str:
    return f"ctl-{_slug(control.id)}"


def cell_anchor(control: Control, host_index: int) -> str:
    # By index: two host names may slug alike (db.1 and db-1).
    return f"{control_anchor(control)}-h{host_index}"


def _controls(reports: Sequence[HostReport]) -> list[Control]:
    """Every control of any host, in catalog order (the order of the results)."""
    seen: dict[str, Control] = {}
    for report in reports:
        for result in report.results:
            seen.setdefault(result.control.id, result.control)
    return list(seen.values())


def _fleet_verdict(verdicts: Sequence[str]) -> str:
    for verdict in (Verdict.NON_COMPLIANT, Verdict.NOT_EVALUATED):
        if verdict in verdicts:
            return verdict
    return Verdict.COMPLIANT


def _badge(status: Status) -> str:
    return (
        f'<span class="st st-{status.lower()}"><span class="sym" aria-hidden="true">'
        f"{SYMBOL[status]}</span> {status}</span>"
    )


def _breakable(name: str) -> str:
    """Escaped, with line-break opportunities after the dots of an FQDN (not mid-label)."""
    return escape(name).replace(".", ".<wbr>")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _masthead(
    reports: Sequence[HostReport], verdicts: Sequence[str], *, strict: bool, generated: datetime
) -> str:
    import kvmprep

    when = generated.astimezone(UTC)
    fleet = _fleet_verdict(verdicts) if reports else "no hosts"
    meta = [
        f'Generated <time datetime="{when.isoformat(timespec="seconds")}">'
        f"{when:%Y-%m-%d %H:%M} UTC</time>",
        f"kvmprep {escape(kvmprep.__version__)}",
        _plural(len(_controls(reports)), "control"),
        "strict: WARN counts as non-compliant" if strict else "WARN is advisory",
    ]
    return (
        '<header class="masthead"><div class="page">'
        '<p class="kicker">kvmprep check &middot; compliance report</p>'
        "<h1>OpenNebula KVM hosts: readiness audit</h1>"
        f'<p class="meta">{"".join(f"<span>{m}</span>" for m in meta)}</p>'
        f'<p class="fleet-verdict {VERDICT_CLASS.get(fleet, "v-unknown")}">'
        f"Fleet: {escape(fleet)} ({_plural(len(reports), 'host')})</p>"
        "</div></header>"
    )


def _summary(reports: Sequence[HostReport], verdicts: Sequence[str]) -> str:
    cards = [
        f'<li class="card total"><span class="num">{len(reports)}</span>'
        '<span class="lbl">hosts audited</span></li>'
    ]
    for verdict in (Verdict.COMPLIANT, Verdict.NON_COMPLIANT, Verdict.NOT_EVALUATED):
        cards.append(
            f'<li class="card {VERDICT_CLASS[verdict]}"><span class="num">'
            f'{verdicts.count(verdict)}</span><span class="lbl">{verdict}</span></li>'
        )
    counts = "".join(
        f"<li>{_badge(status)} {sum(r.count(status) for r in reports)}</li>" for status in Status
    )
    rows = "".join(
        _host_row(report, index, verdict)
        for index, (report, verdict) in enumerate(zip(reports, verdicts, strict=True))
    )
    heads = "".join(f'<th scope="col" class="num-col">{s}</th>' for s in Status)
    return (
        '<section aria-labelledby="summary"><h2 id="summary">Summary</h2>'
        f'<ul class="cards">{"".join(cards)}</ul>'
        f'<ul class="counts" aria-label="results by status">{counts}</ul>'
        '<div class="scroll" style="margin-top:14px"><table class="grid hosts">'
        '<caption class="visually-hidden">Hosts, their verdict and results by status</caption>'
        f'<thead><tr><th scope="col">Host</th><th scope="col">Verdict</th>{heads}'
        '<th scope="col">Note</th></tr></thead>'
        f"<tbody>{rows}</tbody></table></div></section>"
    )


def _host_row(report: HostReport, index: int, verdict: str) -> str:
    counts = "".join(f'<td class="num-col">{report.count(s) or ""}</td>' for s in Status)
    note = f'<span class="host-error">{escape(report.error)}</span>' if report.error else ""
    return (
        f'<tr id="host-{index}"><th scope="row">{escape(report.name)}</th>'
        f'<td class="verdict {VERDICT_CLASS[verdict]}">{escape(verdict)}</td>{counts}'
        f'<td class="note">{note}</td></tr>'
    )


def _matrix(
    reports: Sequence[HostReport], verdicts: Sequence[str], controls: Sequence[Control]
) -> str:
    host_heads = "".join(
        f'<th scope="col" class="host">{_breakable(r.name)}'
        f'<span class="verdict {VERDICT_CLASS[v]}">{escape(v)}</span></th>'
        for r, v in zip(reports, verdicts, strict=True)
    )
    by_host = [{r.control.id: r for r in report.results} for report in reports]
    rows = "".join(_matrix_row(control, by_host) for control in controls)
    legend = "".join(f"<li>{_badge(s)}</li>" for s in Status)
    return (
        '<section aria-labelledby="matrix-h"><h2 id="matrix-h">Controls &times; hosts</h2>'
        f'<ul class="legend" aria-label="legend"><li>Legend:</li>{legend}'
        "<li>Select a cell for the finding and its remediation.</li></ul>"
        '<div class="scroll" role="region" aria-labelledby="matrix-h" tabindex="0">'
        '<table class="matrix" id="matrix">'
        '<caption class="visually-hidden">Status of every control on every host</caption>'
        '<thead><tr><th scope="col">Control</th><th scope="col" class="sev-h">Severity</th>'
        f"{host_heads}</tr></thead><tbody>{rows}</tbody></table></div></section>"
    )


def _matrix_row(control: Control, by_host: Sequence[dict[str, ControlResult]]) -> str:
    cells = []
    for index, results in enumerate(by_host):
        result = results.get(control.id)
        if result is None:  # e.g. a control added to a newer catalog than this host's run
            cells.append('<td class="cell"><span class="st st-none">n/a</span></td>')
            continue
        status = result.status
        tip = f"{status}: {result.message}" if result.message else str(status)
        cells.append(
            f'<td class="cell"><a class="st-{status.lower()}" '
            f'href="#{cell_anchor(control, index)}" title="{escape(tip)}">'
            f'<span class="sym" aria-hidden="true">{SYMBOL[status]}</span> {status}</a></td>'
        )
    return (
        f'<tr><th scope="row"><a class="id" href="#{control_anchor(control)}">'
        f"{escape(control.id)}</a> {escape(control.title)}</th>"
        f'<td class="sev sev-{escape(str(control.severity))}">{escape(str(control.severity))}'
        f"</td>{''.join(cells)}</tr>"
    )


def _migration(reports: Sequence[HostReport]) -> str:
    """One migration matrix per cluster; nothing for a run of one host (nowhere to migrate)."""
    clusters = clusters_of(reports)
    if len(reports) < 2 or not clusters:
        return ""
    outside = [r.name for r in reports if r.cluster is None]
    note = (
        '<p class="unassigned">In no cluster (not evaluated, or without qemu facts: their '
        f"cluster or their QEMU is unknown): {escape(', '.join(outside))}</p>"
        if outside
        else ""
    )
    return (
        '<section aria-labelledby="migration-h"><h2 id="migration-h">Live migration by '
        "cluster</h2>"
        '<ul class="legend" aria-label="legend"><li>Legend:</li>'
        + "".join(f"<li>{_link_badge(link)}</li>" for link in Link)
        + "<li>Rows: the host a VM was started on; columns: the host it moves to.</li></ul>"
        + "".join(_cluster(c) for c in clusters)
        + f"{note}</section>"
    )


def _link_badge(link: Link) -> str:
    status = LINK_STATUS[link]
    return (
        f'<span class="st st-{status.lower()}"><span class="sym" aria-hidden="true">'
        f"{SYMBOL[status]}</span> {escape(str(link))}</span>"
    )


def _cluster(cluster: ClusterMigration) -> str:
    anchor = f"cluster-{_slug(cluster.name)}"
    target = cluster.target_machine or "none every host runs"
    common = ", ".join(sorted(cluster.common_machines.values())) or "none"
    facts = (
        f"<strong>Machine type:</strong> {escape(cluster.machine_basis)}. Newest every host "
        f"runs: {escape(common)}; OS MACHINE to set: <code>{escape(target)}</code>.<br>"
        f"<strong>CPU:</strong> {escape(cluster.cpu_basis)}. Newest named model every host "
        f"runs: {escape(cluster.common_cpu_model or 'unknown')}.<br>"
        f"<strong>Running VMs:</strong> {escape(_running_vms(cluster))}"
    )
    return (
        f'<article class="cluster" id="{anchor}" aria-labelledby="{anchor}-h">'
        f'<h3 id="{anchor}-h">Cluster {escape(cluster.name)} '
        f'<span class="count">{_plural(len(cluster.hosts), "host")}</span> '
        f"{_link_badge(cluster.verdict)}</h3>"
        f'<p class="verdict-line">{escape(cluster.summary().partition(": ")[2])}</p>'
        f'<p class="facts">{facts}</p>'
        f"{_cluster_matrix(cluster)}{_versions(cluster)}</article>"
    )


def _running_vms(cluster: ClusterMigration) -> str:
    """What the VMs already running can do: they keep the machine type they started with."""
    n = len(cluster.running_vms)
    said = [f"{n} whose machine type was read"]
    stuck = cluster.stuck_vms
    if stuck:
        more = f"; and {len(stuck) - 20} more" if len(stuck) > 20 else ""
        said.append(
            "cannot move: "
            + "; ".join(
                f"{vm.label} on {vm.host} ({vm.machine}, not to {', '.join(vm.cannot_go_to)})"
                for vm in stuck[:20]
            )
            + more
        )
    elif n:
        said.append("each can move to every host")
    if cluster.vms_not_read:
        said.append(
            "not read on "
            + "; ".join(f"{host} ({why})" for host, why in sorted(cluster.vms_not_read.items()))
        )
    return "; ".join(said) + "."


def _cluster_matrix(cluster: ClusterMigration) -> str:
    if len(cluster.hosts) < 2:
        return ""
    heads = "".join(f'<th scope="col">{_breakable(h)}</th>' for h in cluster.hosts)
    rows = "".join(
        f'<tr><th scope="row">{escape(source)}</th>'
        + "".join(_link_cell(cluster, source, dest) for dest in cluster.hosts)
        + "</tr>"
        for source in cluster.hosts
    )
    return (
        '<div class="scroll" role="region" tabindex="0" '
        f'aria-label="migration matrix of cluster {escape(cluster.name)}">'
        '<table class="migration">'
        f'<caption class="visually-hidden">Live migration in cluster {escape(cluster.name)}: '
        "rows are the hosts VMs start on, columns the hosts they move to</caption>"
        '<thead><tr><th scope="col" class="corner">started on \u2193 / moves to \u2192</th>'
        f"{heads}</tr></thead><tbody>{rows}</tbody></table></div>"
    )


def _link_cell(cluster: ClusterMigration, source: str, destination: str) -> str:
    cell = cluster.cell(source, destination)
    if cell is None:
        return (
            '<td class="self"><span aria-hidden="true">\u2014</span>'
            '<span class="visually-hidden">same host</span></td>'
        )
    why = "".join(f'<span class="why">{escape(r)}</span>' for r in cell.reasons)
    return f'<td class="link">{_link_badge(cell.link)}{why}</td>'


def _versions(cluster: ClusterMigration) -> str:
    rows = "".join(
        f'<tr><th scope="row">{escape(host)}</th><td>{escape(qemu or "unknown")}</td>'
        f"<td>{escape(libvirt or 'unknown')}</td></tr>"
        for host, qemu, libvirt in cluster.versions
    )
    return (
        '<table class="versions"><caption class="visually-hidden">QEMU and libvirt versions '
        f"in cluster {escape(cluster.name)}</caption>"
        '<thead><tr><th scope="col">Host</th><th scope="col">QEMU</th>'
        f'<th scope="col">libvirt</th></tr></thead><tbody>{rows}</tbody></table>'
    )


def _details(reports: Sequence[HostReport], controls: Sequence[Control]) -> str:
    by_host = [{r.control.id: r for r in report.results} for report in reports]
    articles = "".join(_control_details(c, reports, by_host) for c in controls)
    return (
        '<section aria-labelledby="details-h"><h2 id="details-h">Control details</h2>'
        f"{articles}</section>"
    )


def _control_details(
    control: Control,
    reports: Sequence[HostReport],
    by_host: Sequence[dict[str, ControlResult]],
) -> str:
    rows = []
    tally = dict.fromkeys(Status, 0)
    for index, (report, results) in enumerate(zip(reports, by_host, strict=True)):
        result = results.get(control.id)
        if result is None:
            status_html, message = '<span class="st st-none">n/a</span>', "not evaluated"
        else:
            tally[result.status] += 1
            status_html, message = _badge(result.status), result.message
        fix = (
            f'<span class="fix">fix: {escape(result.fix)}</span>'
            if result is not None and result.fix and result.status is not Status.PASS
            else ""
        )
        rows.append(
            f'<tr id="{cell_anchor(control, index)}"><th scope="row">{escape(report.name)}</th>'
            f'<td class="status-col">{status_html}</td>'
            f'<td class="msg">{escape(message)}{fix}</td></tr>'
        )
    counts = " ".join(f"{_badge(s)}&nbsp;{n}" for s, n in tally.items() if n)
    severity = escape(str(control.severity))
    return (
        f'<article class="control" id="{control_anchor(control)}">'
        f'<h3><span class="id">{escape(control.id)}</span>{escape(control.title)}</h3>'
        f'<p class="sub"><span class="sev sev-{severity}">severity: {severity}</span>'
        f"<span>{counts}</span></p>"
        f"<dl><dt>Rationale</dt><dd>{escape(control.rationale)}</dd>"
        f"<dt>Detection</dt><dd>{escape(control.detection)}</dd>"
        f"<dt>Remediation</dt><dd>{escape(control.remediation)}</dd></dl>"
        '<div class="scroll"><table class="grid results">'
        f'<caption class="visually-hidden">{escape(control.id)} on every host</caption>'
        '<thead><tr><th scope="col">Host</th><th scope="col">Status</th>'
        f'<th scope="col">Finding</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
        '<p class="back"><a href="#matrix">&uarr; back to the matrix</a></p></article>'
    )


def document(
    reports: Sequence[HostReport], *, strict: bool = False, generated: datetime | None = None
) -> str:
    """The whole page as a string."""
    generated = generated or datetime.now(UTC)
    verdicts = [host_verdict(r, strict=strict) for r in reports]
    controls = _controls(reports)
    fleet = _fleet_verdict(verdicts) if reports else "no hosts"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="generator" content="kvmprep">'
        f"<title>kvmprep check: {escape(fleet)}, {_plural(len(reports), 'host')}</title>"
        f"<style>{CSS}</style></head><body>"
        f"{_masthead(reports, verdicts, strict=strict, generated=generated)}"
        '<main class="page">'
        f"{_summary(reports, verdicts)}"
        f"{_migration(reports)}"
        f"{_matrix(reports, verdicts, controls)}"
        f"{_details(reports, controls)}"
        "<footer>Statuses: PASS complies; WARN complies with a reservation; FAIL does not "
        "comply (the remediation says what <code>kvmprep apply</code> or you change); SKIP "
        "does not apply to the host; ERROR could not be evaluated. Produced by "
        "<code>kvmprep check --format html</code>, which changes nothing on the hosts.</footer>"
        "</main></body></html>\n"
    )


def render_html(
    reports: Sequence[HostReport],
    stream: TextIO,
    *,
    strict: bool = False,
    generated: datetime | None = None,
) -> None:
    stream.write(document(reports, strict=strict, generated=generated))
