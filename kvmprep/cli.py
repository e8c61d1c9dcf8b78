"""kvmprep's command line: argument parsing, exit codes and error reporting; nothing else.

It must start fast: Ansible, ansible-runner and the modules that use them are imported
inside the command functions, never at the top of this module.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from kvmprep import validate
from kvmprep.exitcodes import ExitStatus, KvmprepError

if TYPE_CHECKING:
    from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.evaluate import HostReport
    from kvmprep.runner import RunResult

PROG = "kvmprep"

EXIT_CODES = """\
exit codes:
  0    ok: every host converged (with --check: nothing would fail); check: every
       control PASS, WARN or SKIP
  1    usage or input error (bad option, inventory, -e value, playbook or inventory
       syntax, no host matched); nothing was changed
  2    a host failed (apply) or is non-compliant (check: a FAIL; with --strict a WARN)
  3    a host could not be reached (check: or a control could not be evaluated, ERROR),
       and none failed
  130  interrupted (Ctrl-C, SIGTERM, SIGHUP); Ansible's processes are ended and the
       hosts that may be partially changed are listed
"""

#: ``check --format``: the terminal table, then the machine or document formats.
REPORT_FORMATS = ("table", "json", "junit", "html")

_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class _ArgumentParser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error; in kvmprep's contract 2 means "a host failed"."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(ExitStatus.USAGE, f"{self.prog}: error: {message}\n")


class _VersionAction(argparse.Action):
    """argparse's "version" action, but the version is only looked up when asked for."""

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> NoReturn:
        import kvmprep

        print(f"{PROG} {kvmprep.__version__}")
        parser.exit(ExitStatus.OK)


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _ArgumentParser(
        prog=PROG,
        description="Prepare Linux hosts as OpenNebula KVM hypervisors, with Ansible.",
        epilog=EXIT_CODES,
        formatter_class=formatter,
    )
    parser.add_argument(
        "--version", action=_VersionAction, nargs=0, help="show the version and exit"
    )

    # Options every subcommand has (a future `check` adds its own next to them).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="show Ansible's own output instead of the progress line (-vvv for more)",
    )
    common.add_argument(
        "--debug", action="store_true", help="show a traceback when kvmprep itself fails"
    )

    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    apply = commands.add_parser(
        "apply",
        parents=[common],
        help="converge hosts into OpenNebula KVM hypervisors",
        description="Converge the hosts of the kvm_hosts group: verify KVM, install and "
        "configure libvirt and QEMU for OpenNebula. Then, when the inventory has a frontend "
        "group: enable the kvm drivers on the OpenNebula front-end, give oneadmin SSH trust "
        "between all machines, copy the driver remotes to the hosts and register them. "
        "Re-running changes nothing.",
        epilog=EXIT_CODES,
        formatter_class=formatter,
    )
    apply.add_argument(
        "-i",
        "--inventory",
        action="append",
        required=True,
        metavar="INVENTORY",
        help="Ansible inventory file or directory (repeatable)",
    )
    apply.add_argument(
        "-l", "--limit", metavar="PATTERN", help="only hosts matching this Ansible host pattern"
    )
    apply.add_argument(
        "-C", "--check", action="store_true", help="change nothing; report what would change"
    )
    apply.add_argument(
        "-D",
        "--diff",
        action="store_true",
        help="show the changes made (with --check: planned); shows Ansible's output",
    )
    apply.add_argument(
        "-e",
        "--extra-vars",
        action="append",
        metavar="KEY=VALUE|@FILE",
        help="set a variable (VALUE is read as YAML: true, 3, [a, b]) or load a YAML mapping "
        "from FILE; repeatable, later ones win",
    )
    apply.add_argument(
        "--serial",
        type=_batch_size,
        metavar="N|N%[,...]",
        help="converge the hosts in batches of N hosts (or N%% of them; a list such as 1,10,50%% "
        "sets each batch in turn); default: all at once",
    )
    apply.add_argument(
        "--max-fail-percent",
        type=_percent,
        metavar="P",
        help="stop before the next batch once more than P%% of a batch failed "
        "(with --serial: 0 stops at the first failed host); default: 100, never stop early",
    )
    apply.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="json: also write the change report (schema kvmprep.changes/1) to stdout; "
        "it is in the run's artifacts as changes.json either way",
    )
    parts = apply.add_mutually_exclusive_group()
    parts.add_argument(
        "--skip-frontend",
        action="store_true",
        help="prepare the hosts only: leave the front-end, SSH trust and registration alone",
    )
    parts.add_argument(
        "--only-frontend",
        action="store_true",
        help="configure the front-end, SSH trust, remotes and registration, not the hosts",
    )
    apply.set_defaults(handler=_apply)

    check = commands.add_parser(
        "check",
        parents=[common],
        help="audit hosts against the control catalog (changes nothing)",
        description="Audit the hosts of the kvm_hosts group (this machine without -i) against "
        "kvmprep's controls: one read-only module call per host, judged on this machine. "
        "The report goes to stderr, --format json, junit and html to stdout.",
        epilog=EXIT_CODES,
        formatter_class=formatter,
    )
    check.add_argument(
        "-i",
        "--inventory",
        action="append",
        metavar="INVENTORY",
        help="Ansible inventory file or directory (repeatable); default: this machine, "
        "over a local connection",
    )
    check.add_argument(
        "-l", "--limit", metavar="PATTERN", help="only hosts matching this Ansible host pattern"
    )
    check.add_argument(
        "--format",
        choices=REPORT_FORMATS,
        default="table",
        help="table (terminal, on stderr), json (schema kvmprep.check/1), junit (JUnit XML "
        "for CI) or html (a self-contained fleet report); json, junit and html go to stdout",
    )
    check.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        type=Path,
        help="write the report to FILE; the terminal keeps the summary",
    )
    check.add_argument(
        "-q", "--quiet", action="store_true", help="show only the controls that did not pass"
    )
    check.add_argument(
        "--strict", action="store_true", help="count WARN as non-compliant (exit status 2)"
    )
    check.add_argument(
        "--smoke",
        action="store_true",
        help="then, on each host reached, boot a tiny transient KVM domain as oneadmin from a "
        "disk in its datastores and destroy it (control SMOKE-001, with timings); everything "
        "is removed afterwards, also after a failure or Ctrl-C",
    )
    check.add_argument(
        "--migrate",
        action="store_true",
        help="implies --smoke; also live-migrate the domain between the first two hosts "
        "(inventory order, after --limit) and back over kvm_host_migration_transport "
        "(SMOKE-002); needs two hosts",
    )
    check.set_defaults(handler=_check)

    controls = commands.add_parser(
        "controls",
        help="list the controls that check evaluates",
        description="List the control catalog: id, severity and title (json: also the "
        "rationale, detection and remediation).",
    )
    controls.add_argument("--format", choices=("table", "json"), default="table")
    controls.add_argument(
        "--debug", action="store_true", help="show a traceback when kvmprep itself fails"
    )
    controls.set_defaults(handler=_controls)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run kvmprep and return its exit status (see ``ExitStatus``); never raises SystemExit."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else ExitStatus.USAGE
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return ExitStatus.USAGE
    debug = bool(getattr(args, "debug", False))
    try:
        return int(handler(args))
    except KvmprepError as exc:
        if debug:
            traceback.print_exc()
        _error(exc.message)
        return int(exc.exit_status)
    except KeyboardInterrupt:  # before or after the run; during it, signals cancel the run
        _error("interrupted")
        return ExitStatus.INTERRUPTED
    except Exception as exc:
        if debug:
            traceback.print_exc()
        _error(f"unexpected {type(exc).__name__}: {exc} (run with --debug for a traceback)")
        # Not USAGE: that promises nothing was changed, which kvmprep cannot know here.
        return ExitStatus.FAILED


def parse_extra_vars(specs: Sequence[str]) -> dict[str, Any]:
    """Merge ``-e`` values left to right: ``KEY=VALUE`` (VALUE as a YAML scalar), ``@FILE``
    (a YAML mapping) or an inline YAML/JSON mapping, as ansible-playbook accepts."""
    merged: dict[str, Any] = {}
    for spec in specs:
        merged.update(_parse_extra_var(spec))
    # The apply playbook reads these for its play keywords: Ansible would hang on a huge
    # serial and print a traceback on a word.
    if "kvmprep_serial" in merged:
        merged["kvmprep_serial"] = validate.batch_sizes(
            merged["kvmprep_serial"], "-e kvmprep_serial"
        )
    if "kvmprep_max_fail_percentage" in merged:
        merged["kvmprep_max_fail_percentage"] = validate.percentage(
            merged["kvmprep_max_fail_percentage"], "-e kvmprep_max_fail_percentage"
        )
    if isinstance(merged.get("one_frontend_xmlrpc"), str):
        validate.endpoint(merged["one_frontend_xmlrpc"], "-e one_frontend_xmlrpc")
    try:
        json.dumps(merged)
    except (TypeError, ValueError) as exc:
        raise KvmprepError(f"-e: a value cannot be passed to Ansible: {exc}") from exc
    return merged


def _parse_extra_var(spec: str) -> dict[str, Any]:
    if spec.startswith("@"):
        path = Path(spec[1:]).expanduser()
        shown = validate.shown(spec[1:])
        try:
            if not path.is_file():  # a FIFO would block the read forever
                raise KvmprepError(f"-e @{shown}: not a regular file")
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise KvmprepError(
                f"-e @{shown}: cannot read {validate.shown(path)}: {reason}"
            ) from exc
        where = f"-e @{validate.shown(spec[1:])}"
        return _mapping(_load_yaml(text, where), where)
    if spec.lstrip().startswith("{"):
        return _mapping(_load_yaml(spec, "-e"), "-e")
    key, sep, value = spec.partition("=")
    key = key.strip()
    if not sep or not _VAR_NAME.match(key):
        raise KvmprepError(f"-e {spec!r}: expected KEY=VALUE with a variable name as KEY, or @FILE")
    return {key: _load_yaml(value, f"-e {key}") if value.strip() else ""}


def _load_yaml(text: str, where: str) -> Any:
    import yaml

    # Dates stay strings (JSON has no date type and Ansible would get a string anyway).
    class _Loader(yaml.SafeLoader):
        pass

    _Loader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects
    except RecursionError:
        raise KvmprepError(f"{where}: too deeply nested") from None
    except yaml.YAMLError as exc:
        hint = ""
        if "!vault" in str(exc):
            hint = " (vaulted values belong in inventory group_vars/host_vars)"
        detail = " ".join(str(exc).split())
        raise KvmprepError(f"{where}: not valid YAML{hint}: {detail}") from exc
    validate.nesting(data, where)
    return data


def _mapping(data: Any, where: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise KvmprepError(
            f"{where}: expected a YAML mapping of variables, got {type(data).__name__}"
        )
    bad = [str(k) for k in data if not isinstance(k, str) or not _VAR_NAME.match(k)]
    if bad:
        raise KvmprepError(f"{where}: not valid variable names: {', '.join(bad)}")
    return data


def inventory_paths(values: Sequence[str]) -> list[Path]:
    """Check each ``-i`` before anything runs: Ansible would only warn and match no host."""
    return [validate.inventory_path(value) for value in values]


def _batch_size(value: str) -> str | list[str]:
    """``N`` or ``N%`` with N >= 1, or a comma list of them (Ansible's ``serial``)."""
    try:
        return validate.batch_sizes(value, "--serial")
    except KvmprepError as exc:
        raise argparse.ArgumentTypeError(exc.message.removeprefix("--serial: ")) from None


def _percent(value: str) -> int:
    try:
        return validate.percentage(value, "--max-fail-percent")
    except KvmprepError as exc:
        raise argparse.ArgumentTypeError(exc.message.removeprefix("--max-fail-percent: ")) from None


def _check_environment(args: argparse.Namespace, *, frontend: bool) -> None:
    """What kvmprep takes from its environment and options besides -i and -e, checked before
    anything runs: the working directory, --limit and OpenNebula's ONE_XMLRPC and ONE_AUTH."""
    validate.utf8_path(str(Path.cwd()), "the working directory")
    if args.limit is not None:
        validate.host_pattern(args.limit)
    endpoint = os.environ.get("ONE_XMLRPC")
    if endpoint:
        # Refused even when unused: ansible-playbook's environment is recorded with each run.
        validate.endpoint(endpoint, "ONE_XMLRPC")
        if frontend and not _is_http_url(endpoint):
            raise KvmprepError(
                f"ONE_XMLRPC={validate.shown(endpoint)!r} is not an http(s) URL; "
                "expected e.g. http://one.example.org:2633/RPC2"
            )
    auth_file = os.environ.get("ONE_AUTH")
    if auth_file and frontend:
        validate.one_auth_file(auth_file)


def _is_http_url(text: str) -> bool:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _apply(args: argparse.Namespace) -> int:
    inventories = inventory_paths(args.inventory)
    extravars = parse_extra_vars(args.extra_vars or [])
    # The apply playbook reads these for its play keywords (serial, max_fail_percentage).
    if args.serial is not None:
        extravars["kvmprep_serial"] = args.serial
    if args.max_fail_percent is not None:
        extravars["kvmprep_max_fail_percentage"] = args.max_fail_percent
    _check_environment(args, frontend=not args.skip_frontend)
    if args.skip_frontend:
        extravars["kvmprep_frontend"] = False
    if args.only_frontend:
        extravars["kvmprep_hosts"] = False

    from kvmprep import changes, content, runner, summary
    from kvmprep.progress import Progress, use_color

    playbook = content.playbook("apply")
    color = use_color(sys.stderr)
    # Ansible renders the diffs, so --diff shows its output, as -v does, instead of progress.
    show_ansible = bool(args.verbose or args.diff)
    progress = None if show_ansible else Progress.for_stream(sys.stderr)
    if progress is not None:
        progress.start(f"{playbook.name} on {', '.join(p.name for p in inventories)}")
    try:
        with runner.cancel_on_signals() as cancelled:
            result = runner.run_playbook(
                playbook,
                inventories,
                limit=args.limit,
                check=args.check,
                diff=args.diff,
                extravars=extravars,
                verbosity=args.verbose,
                output=sys.stderr if show_ansible else None,
                color=color,
                observer=progress,
                cancel=cancelled.is_set,
                capture=(ROLLOUT_TASK,),
            )
    finally:
        if progress is not None:
            progress.close()
    if result.input_error and not result.interrupted:
        raise KvmprepError(f"nothing was run: {result.error}", ExitStatus.USAGE)
    try:
        changes.write_artifact(result)
    except OSError as exc:
        _error(f"the change report was not written to the run's artifacts: {exc}")
    try:
        if show_ansible:
            print(file=sys.stderr)  # set the summary apart from Ansible's recap
        summary.render_summary(result, sys.stderr, color=color, not_reached=_not_reached(result))
        changes.render_text(result, sys.stderr)
        if args.format == "json":
            changes.dump(result, sys.stdout)
            sys.stdout.flush()
    except OSError:
        # The terminal is gone (SIGHUP): the exit status and the artifacts still tell.
        pass
    return result.exit_status


#: The apply playbook's task that lists the hosts of a --serial rollout.
ROLLOUT_TASK = "kvmprep rollout hosts"


def _not_reached(result: RunResult) -> list[str]:
    """Hosts of the rollout that no batch reached (a failed batch stopped it)."""
    seen = {h.name for h in result.hosts}
    for results in result.task_results.values():
        targeted = (results.get(ROLLOUT_TASK) or {}).get("msg")
        if isinstance(targeted, list):
            return [str(name) for name in targeted if name not in seen]
    return []


def _check(args: argparse.Namespace) -> int:
    inventories = inventory_paths(args.inventory) if args.inventory else None
    if args.output is not None:
        validate.utf8_path(str(args.output), "--output")
        if not args.output.expanduser().parent.is_dir():
            raise KvmprepError(f"--output {args.output}: no such directory")
    _check_environment(args, frontend=False)

    from kvmprep import check, runner
    from kvmprep.progress import Progress, use_color

    color = use_color(sys.stderr)
    progress = None if args.verbose else Progress.for_stream(sys.stderr)
    if progress is not None:
        where = ", ".join(p.name for p in inventories) if inventories else "this machine"
        progress.start(f"check on {where}")

    def notify(what: str) -> None:
        if progress is not None:
            progress.close()
            progress.start(what)
        else:
            print(f"kvmprep: {what}", file=sys.stderr)

    try:
        with runner.cancel_on_signals() as cancelled:
            outcome = check.run_check(
                inventories,
                limit=args.limit,
                verbosity=args.verbose,
                output=sys.stderr if args.verbose else None,
                color=color,
                observer=progress,
                cancel=cancelled.is_set,
                smoke_test=args.smoke,
                migrate=args.migrate,
                notify=notify,
            )
    finally:
        if progress is not None:
            progress.close()
    run = outcome.run
    if outcome.interrupted:
        if outcome.smoke is None:
            _error("interrupted; nothing was changed (check only reads)")
        elif outcome.smoke.not_cleaned:
            name = f"kvmprep-smoke-{outcome.smoke.run_id}"
            lines = [f"{host}: {why}" for host, why in outcome.smoke.not_cleaned.items()]
            _error(
                f"interrupted during the smoke test; {name} could not be cleaned up on:\n"
                + "\n".join(lines)
                + f"\nremove it there: virsh -c qemu:///system destroy {name}; "
                f"rm -f /var/lib/one/datastores/kvmprep-smoke/{name}.*"
            )
        else:
            _error(
                f"interrupted during the smoke test; kvmprep-smoke-{outcome.smoke.run_id} was "
                f"cleaned up on {', '.join(outcome.smoke.hosts)}; nothing else was changed"
            )
        return ExitStatus.INTERRUPTED
    if run.input_error:
        raise KvmprepError(f"nothing was run: {run.error}", ExitStatus.USAGE)
    reports = outcome.reports
    status = check.exit_status(reports, strict=args.strict)
    # After the run: imported during it (check.import_judges).
    from kvmprep.report import table

    if args.output is not None:
        path = args.output.expanduser()
        try:
            with path.open("w", encoding="utf-8") as stream:
                _render_report(args, reports, stream, status)
        except OSError as exc:
            raise KvmprepError(f"--output {args.output}: {exc.strerror}") from exc
        table.render_summary(reports, sys.stderr, color=color, strict=args.strict)
        print(f"report written to {path}", file=sys.stderr)
    elif args.format == "table":
        table.render_table(reports, sys.stderr, color=color, quiet=args.quiet, strict=args.strict)
    else:
        _render_report(args, reports, sys.stdout, status)
        table.render_summary(reports, sys.stderr, color=color, strict=args.strict)
    if run.error:
        print(f"Ansible reported an error not attributed to a host:\n{run.error}", file=sys.stderr)
    return status


def _render_report(
    args: argparse.Namespace, reports: Sequence[HostReport], stream: TextIO, status: int
) -> None:
    """The report of ``check`` in ``--format``, to ``stream`` (a file or stdout)."""
    # Each renderer is imported only when chosen: the table is all most runs need.
    if args.format == "json":
        from kvmprep.report import json as json_report

        json_report.render_json(reports, stream, strict=args.strict, exit_status=status)
    elif args.format == "junit":
        from kvmprep.report import junit

        junit.render_junit(reports, stream, strict=args.strict)
    elif args.format == "html":
        from kvmprep.report import html

        html.render_html(reports, stream, strict=args.strict)
    else:
        from kvmprep.report import table

        table.render_table(reports, stream, quiet=args.quiet, strict=args.strict)


def _controls(args: argparse.Namespace) -> int:
    from kvmprep import content

    content.import_collection()
    from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.catalog import (
        CATALOG,
        SMOKE,
    )

    if args.format == "json":
        from kvmprep.report import json as json_report

        json_report.render_catalog((*CATALOG, *SMOKE), sys.stdout)
        return ExitStatus.OK
    for control in CATALOG:
        print(f"{control.id:<9} {control.severity:<8} {control.title}")
    for control in SMOKE:
        print(
            f"{control.id:<9} {control.severity:<8} {control.title} (only with {control.only_with})"
        )
    return ExitStatus.OK


def _error(message: str) -> None:
    first, *rest = message.splitlines() or [""]
    lines = [f"{PROG}: error: {first}", *(f"    {line}" for line in rest)]
    print("\n".join(lines), file=sys.stderr)
