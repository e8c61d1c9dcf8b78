"""The command line: parsing, exit codes, error lines, progress and summary output."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, REPO_ROOT

from kvmprep import content
from kvmprep.cli import main, parse_extra_vars
from kvmprep.exitcodes import ExitStatus
from kvmprep.progress import Progress
from kvmprep.runner import HostState, RunResult, RunState
from kvmprep.summary import render_summary

INVENTORY = str(FIXTURES / "inventory.ini")
SGR = re.compile(r"\x1b\[[0-9;]*m")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


# --- help, version, usage --------------------------------------------------------------


@pytest.mark.parametrize("argv", [["--help"], ["apply", "--help"]])
def test_help_lists_the_exit_codes(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    out = capsys.readouterr().out
    for code in ("0 ", "1 ", "2 ", "3 ", "130 "):
        assert f"\n  {code}" in out
    assert "interrupted" in out


def test_help_does_not_import_ansible() -> None:
    code = (
        "import sys\n"
        "from kvmprep.cli import main\n"
        "rc = main(['--help'])\n"
        "top = {m.split('.')[0] for m in sys.modules}\n"
        "heavy = sorted(top & {'ansible', 'ansible_runner'})\n"
        "print(rc, heavy, file=sys.stderr)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert proc.stderr.strip() == "0 []"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("kvmprep ")


@pytest.mark.parametrize("argv", [[], ["apply"], ["apply", "-i", INVENTORY, "--bogus"], ["nope"]])
def test_usage_errors_exit_1(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == ExitStatus.USAGE
    assert "Traceback" not in capsys.readouterr().err


# --- known errors: one line, exit 1, traceback only with --debug ----------------------------


def test_frontend_options_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["apply", "-i", INVENTORY, "--skip-frontend", "--only-frontend"]
    assert main(argv) == ExitStatus.USAGE
    assert "not allowed with argument --skip-frontend" in capsys.readouterr().err


@pytest.mark.parametrize(
    "endpoint", ["one.example.org:2633", "ftp://one/RPC2", "http://", "http://one:x/"]
)
def test_an_endpoint_that_is_not_a_url_is_refused_before_anything_runs(
    endpoint: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ONE_XMLRPC", endpoint)
    assert main(["apply", "-i", INVENTORY]) == ExitStatus.USAGE
    err = capsys.readouterr().err
    assert f"ONE_XMLRPC={endpoint!r} is not an http(s) URL" in err
    assert "Traceback" not in err


def test_missing_inventory_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["apply", "-i", "/nonexistent/hosts.ini"]) == ExitStatus.USAGE
    captured = capsys.readouterr()
    assert _error_lines(captured.err) == [
        "kvmprep: error: inventory /nonexistent/hosts.ini: no such file or directory"
    ]
    assert captured.out == ""


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["apply", "--debug", "-i", "/nonexistent/hosts.ini"]) == ExitStatus.USAGE
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.rstrip().endswith("no such file or directory")


def test_unreadable_inventory(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[kvm_hosts]\n")
    inventory.chmod(0)
    tmp_path.chmod(0o755)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: root reads any file, so drop to nobody first
        os.close(read_end)
        sys.stderr = os.fdopen(write_end, "w")
        if os.geteuid() == 0:
            os.setgid(65534)
            os.setuid(65534)
        status = main(["apply", "-i", str(inventory)])
        sys.stderr.flush()
        os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as child_stderr:
        err = child_stderr.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == ExitStatus.USAGE
    assert "permission denied" in err.lower()


@pytest.mark.parametrize(
    "spec",
    ["novalue", "1bad=2", "bad key=1", "x=[unclosed", "@/nonexistent.yml", "@LIST", "@VAULT"],
)
def test_bad_extra_vars_exit_1(
    spec: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "list.yml").write_text("- a\n- b\n")
    (tmp_path / "vault.yml").write_text("token: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  3031\n")
    spec = spec.replace("@LIST", f"@{tmp_path / 'list.yml'}")
    spec = spec.replace("@VAULT", f"@{tmp_path / 'vault.yml'}")
    assert main(["apply", "-i", INVENTORY, "-e", spec]) == ExitStatus.USAGE
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1
    assert lines[0].startswith("kvmprep: error: -e")


def test_extra_vars_are_yaml_scalars_merged_left_to_right(tmp_path: Path) -> None:
    varfile = tmp_path / "vars.yml"
    varfile.write_text("count: 1\nnested: {a: [1, 2]}\nword: from-file\n")
    parsed = parse_extra_vars(
        [
            "kvm_host_allow_emulation=true",
            "word=hello",
            f"@{varfile}",
            "count=3",
            "ratio=0.5",
            "empty=",
            "quoted='true'",
            "items=[a, b]",
            "day=2024-01-31",
            "text=a=b",
            '{"inline": 1}',
        ]
    )
    assert parsed == {
        "kvm_host_allow_emulation": True,
        "word": "from-file",
        "count": 3,
        "nested": {"a": [1, 2]},
        "ratio": 0.5,
        "empty": "",
        "quoted": "true",
        "items": ["a", "b"],
        "day": "2024-01-31",
        "text": "a=b",
        "inline": 1,
    }


def test_empty_var_file_is_no_vars(tmp_path: Path) -> None:
    (tmp_path / "empty.yml").write_text("# nothing yet\n")
    assert parse_extra_vars([f"@{tmp_path / 'empty.yml'}"]) == {}


def test_unexpected_errors_are_one_line_and_not_usage(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(name: str) -> Path:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(content, "playbook", broken)
    assert main(["apply", "-i", INVENTORY]) == ExitStatus.FAILED
    lines = _error_lines(capsys.readouterr().err)
    assert lines == [
        "kvmprep: error: unexpected RuntimeError: disk on fire (run with --debug for a traceback)"
    ]


# --- real runs through the CLI (the apply playbook swapped for a fixture) -------------------


def _use_playbook(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setattr(content, "playbook", lambda _name: FIXTURES / name)


@pytest.mark.ansible
def test_apply_failure_exit_2_and_summary(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _use_playbook(monkeypatch, "fail_one.yml")
    assert main(["apply", "-i", INVENTORY]) == ExitStatus.FAILED
    captured = capsys.readouterr()
    assert captured.out == ""  # stdout is reserved for machine output
    err = captured.err
    assert "\x1b" not in err  # not a terminal: no escape codes at all
    # One plain line per task when it ends, with that task's own outcome per host.
    assert "[task 1] Break the second host  ·  failed: second; skipped: localhost\n" in err
    assert "[task 2] Continue on the others  ·  changed: localhost\n" in err
    assert re.search(r"^second\s+0\s+0\s+1\s+0\s+0\s+FAILED$", err, re.MULTILINE)
    assert re.search(r"^localhost\s+1\s+1\s+0\s+0\s+1\s+changed$", err, re.MULTILINE)
    assert 'second: FAILED at task "Break the second host": boom on purpose' in err
    assert "Run artifacts: " in err


@pytest.mark.ansible
def test_apply_check_and_limit(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _use_playbook(monkeypatch, "check_mode.yml")
    assert main(["apply", "-i", INVENTORY, "--check", "-l", "localhost"]) == ExitStatus.OK
    err = capsys.readouterr().err
    assert "1 host: 1 ok (check mode" in err
    assert "Run artifacts" not in err


@pytest.mark.ansible
def test_apply_extra_vars_reach_the_play_not_the_artifacts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _use_playbook(monkeypatch, "extravars.yml")
    secret = "kvmprep-canary-5e3cr3t-71d2"  # its sha1 is asserted in the playbook
    argv = ["apply", "-i", INVENTORY, "-e", "flag=true", "-e", "count=3"]
    assert main([*argv, "-e", f"secret_token={secret}"]) == ExitStatus.OK
    artifacts = Path(os.environ["KVMPREP_ARTIFACT_DIR"])
    files = [p for p in artifacts.rglob("*") if p.is_file()]
    assert files
    assert [p for p in files if secret.encode() in p.read_bytes()] == []
    assert secret not in capsys.readouterr().err


@pytest.mark.ansible
def test_apply_syntax_error_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _use_playbook(monkeypatch, "syntax_error.yml")
    assert main(["apply", "-i", INVENTORY]) == ExitStatus.USAGE
    err = capsys.readouterr().err
    assert err.startswith("kvmprep: error: nothing was run: [ERROR]: YAML parsing failed")
    assert "Traceback" not in err


# --- progress and summary rendering ---------------------------------------------------------


def _state() -> RunState:
    state = RunState()
    state({"event": "playbook_on_task_start", "event_data": {"task": "Install libvirt"}})
    state({"event": "runner_on_ok", "event_data": {"host": "a", "res": {"changed": True}}})
    state({"event": "runner_on_failed", "event_data": {"host": "b", "res": {"msg": "no"}}})
    return state


def test_progress_without_a_terminal_is_one_plain_line_per_ended_task() -> None:
    stream = io.StringIO()
    progress = Progress.for_stream(stream, environ={})
    progress.start("apply.yml")  # nothing on a non-terminal
    state = _state()
    progress(state)
    assert stream.getvalue() == ""  # the task has not ended: more hosts may answer
    state({"event": "playbook_on_task_start", "event_data": {"task": "Configure"}})
    progress(state)
    progress(state)  # same state: no new line
    progress.close()  # the run ended without stats (interrupted): the last task is unfinished
    assert stream.getvalue().splitlines() == [
        "[task 1] Install libvirt  ·  failed: b; changed: a",
        "[task 2] Configure  ·  unfinished",
    ]
    assert "\x1b" not in stream.getvalue()
    assert "\r" not in stream.getvalue()


def test_progress_on_a_terminal_rewrites_one_line_with_colour() -> None:
    stream = _Tty()
    progress = Progress.for_stream(stream, environ={})
    progress(_state())
    progress.close()
    out = stream.getvalue()
    assert out.startswith("\r\x1b[K[task 1] Install libvirt")
    # The counts on a terminal are the run's, not the task's, and say so.
    assert "  ·  run so far, hosts 2: ok " in SGR.sub("", out)
    assert SGR.search(out)
    assert out.endswith("\r\x1b[K")  # the summary starts on a clean line
    assert "\n" not in out


def test_progress_honours_no_color() -> None:
    stream = _Tty()
    progress = Progress.for_stream(stream, environ={"NO_COLOR": "1"})
    progress(_state())
    assert "\r" in stream.getvalue()
    assert not SGR.search(stream.getvalue())


def test_summary_table_and_failures(tmp_path: Path) -> None:
    hosts = (
        HostState("node-1", ok=5, changed=2, skipped=1),
        HostState("n2", ok=1, failures=1, failed_task="Install", message="No package\nline 2"),
        HostState("n3", unreachable=1, failed_task="Gathering Facts", message="refused"),
    )
    result = RunResult(hosts=hosts, artifact_dir=tmp_path, runner_status="failed", rc=2)
    stream = io.StringIO()
    render_summary(result, stream, color=False)
    assert stream.getvalue().splitlines() == [
        "HOST    OK  CHANGED  FAILED  UNREACHABLE  SKIPPED  STATUS",
        "node-1   5        2       0            0        1  changed",
        "n2       1        0       1            0        0  FAILED",
        "n3       0        0       0            1        0  UNREACHABLE",
        "3 hosts: 1 changed, 1 FAILED, 1 UNREACHABLE",
        "",
        'n2: FAILED at task "Install": No package',
        "    line 2",
        'n3: UNREACHABLE at task "Gathering Facts": refused',
        "",
        f"Run artifacts: {tmp_path}",
    ]


def test_summary_shows_the_roles_warnings_and_the_hosts_not_reached(tmp_path: Path) -> None:
    hosts = (
        HostState("fe", ok=3, warnings=["the kvm drivers changed: restart oned\nsecond line"]),
        HostState("h1", ok=2),
    )
    result = RunResult(hosts=hosts, artifact_dir=tmp_path, runner_status="successful", rc=0)
    stream = io.StringIO()
    render_summary(result, stream, color=False, not_reached=["h2", "h3"])
    lines = stream.getvalue().splitlines()
    assert lines[4:] == [
        "Not reached (the rollout stopped before their batch; nothing ran on them): h2, h3",
        "",
        "Warnings:",
        "fe: the kvm drivers changed: restart oned",
        "    second line",
    ]


def test_summary_of_an_interrupted_run(tmp_path: Path) -> None:
    hosts = (HostState("a", ok=1, changed=1), HostState("b", task_in_progress="Install"))
    result = RunResult(
        hosts=hosts, artifact_dir=tmp_path, runner_status="canceled", rc=254, interrupted=True
    )
    stream = io.StringIO()
    render_summary(result, stream, color=False)
    assert result.exit_status is ExitStatus.INTERRUPTED
    assert "Interrupted: these hosts may be partially changed: a, b" in stream.getvalue()


@pytest.mark.ansible
def test_ctrl_c_exits_130_and_names_partially_changed_hosts() -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from kvmprep import cli, content\n"
        f"content.playbook = lambda name: Path({str(FIXTURES / 'slow.yml')!r})\n"
        f"sys.exit(cli.main(['apply', '-i', {INVENTORY!r}]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, env=env
    )
    assert proc.stderr is not None
    seen = []
    # One plain line per task when it ends (stderr is a pipe): task 1's comes as task 2 starts.
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("[task 1] Report a change"):
            break
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=30) == ExitStatus.INTERRUPTED, "".join(seen) + rest
    assert "Interrupted: these hosts may be partially changed: localhost, second" in rest
    assert "[task 2] Wait a long time  ·  unfinished" in rest  # logged although it never ended
    assert "Traceback" not in rest


@pytest.mark.ansible
@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="needs dpkg's database")
def test_apply_check_names_the_packages_it_would_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Check mode calls neither apt nor dnf (apt refuses it on a host without python3-apt):
    # the packages the probe found missing, and those dpkg-query does not know as installed on
    # the front-end, are a change that names them, in the summary without -v.
    _use_playbook(monkeypatch, "check_mode_packages.yml")
    assert main(["apply", "-i", INVENTORY, "--check", "-l", "localhost"]) == ExitStatus.OK
    err = capsys.readouterr().err
    assert re.search(r"^localhost\s+\d+\s+2\s+0\s+0\s+\d+\s+changed$", err, re.MULTILINE)
    assert (
        "localhost: check mode: would install: kvmprep-test-missing-a, kvmprep-test-missing-b;"
        in err
    )
    assert "localhost: check mode: would install on the front-end: kvmprep-test-missing-c" in err
    assert "python3-apt" not in err
    # The change report names them, each once, as what a run without --check would do.
    assert err[err.index("\nChanges (check mode") :].splitlines()[2:] == [
        "localhost:",
        "  would: kvmprep-test-missing-a installed",
        "  would: kvmprep-test-missing-b installed",
        "  would: kvmprep-test-missing-c installed",
    ]
