"""Hostile and careless input to the command line (issue 16): each is refused with one line
and exit status 1 before Ansible starts, or, once it runs, no secret reaches what kvmprep keeps
and an interruption (a closed terminal included) ends every process Ansible started."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FIXTURES, REPO_ROOT

from kvmprep import check, content, runner
from kvmprep.cli import main
from kvmprep.exitcodes import ExitStatus
from kvmprep.runner import RunResult, RunState
from kvmprep.summary import render_summary

INVENTORY = str(FIXTURES / "inventory.ini")
BECOME_PASS = "kvmprep-become-5e3cr3t-90af"  # its sha1 is asserted in fixtures/secrets.yml
SASL_PASS = "kvmprep-canary-5e3cr3t-71d2"  # likewise
MARKER = "kvmprep-visible-marker-3f1"


def _lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


@pytest.fixture
def no_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """These inputs must be refused before Ansible starts (some would make it hang)."""

    def started(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("Ansible was started")

    monkeypatch.setattr(runner, "run_playbook", started)
    monkeypatch.setattr(check, "run_check", started)


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``argv``, expect exit 1 and a single error line, return that line."""
    status = main(argv)
    err = capsys.readouterr().err
    assert status == ExitStatus.USAGE, err
    assert "Traceback" not in err
    lines = _lines(err)
    if lines[0].startswith("usage:"):  # argparse's own errors come after the usage
        lines = [line for line in lines if ": error: " in line]
    assert len(lines) == 1, err
    return lines[0]


# --- finding 6: --serial, --max-fail-percent and their extra vars -----------------------------


@pytest.mark.usefixtures("no_run")
@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["--serial", "99999999999999999999"],
            "argument --serial: '99999999999999999999': a host count must be 1-100000",
        ),
        (["--serial", "100001"], "argument --serial: '100001': a host count must be 1-100000"),
        (["--serial", "1,abc"], "argument --serial: 'abc': not a host count N or a share N%"),
        (["--serial", "1,,2"], "argument --serial: '': not a host count N or a share N%"),
        (["--serial", "0%"], "argument --serial: '0%': a share must be 1%-100%"),
        (
            ["--max-fail-percent", "9" * 5000],
            f"argument --max-fail-percent: '{'9' * 5000}' is not a percentage 0-100",
        ),
        (
            ["-e", "kvmprep_serial=abc"],
            "-e kvmprep_serial: 'abc': not a host count N or a share N%",
        ),
        (
            ["-e", "kvmprep_serial=99999999999999999999"],
            "-e kvmprep_serial: '99999999999999999999': a host count must be 1-100000",
        ),
        (
            ["-e", "kvmprep_serial=[1, {a: b}]"],
            "-e kvmprep_serial: \"{'a': 'b'}\": not a host count N or a share N%",
        ),
        (
            ["-e", "kvmprep_serial=true"],
            "-e kvmprep_serial: expected a host count N or a share N% (1-100)",
        ),
        (
            ["-e", "kvmprep_max_fail_percentage=abc"],
            "-e kvmprep_max_fail_percentage: 'abc' is not a percentage 0-100",
        ),
        (
            ["-e", "kvmprep_max_fail_percentage=250"],
            "-e kvmprep_max_fail_percentage: '250' is not a percentage 0-100",
        ),
    ],
)
def test_rollout_sizes_are_bounded(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _refused(["apply", "-i", INVENTORY, *argv], capsys)
    assert line.split(": error: ", 1)[1] == expected


def test_rollout_sizes_ansible_accepts_pass_through() -> None:
    from kvmprep.cli import parse_extra_vars

    assert parse_extra_vars(["kvmprep_serial=[1, 10, '50%']"])["kvmprep_serial"] == [
        "1",
        "10",
        "50%",
    ]
    assert parse_extra_vars(["kvmprep_serial=5"])["kvmprep_serial"] == "5"
    assert parse_extra_vars(["kvmprep_max_fail_percentage=0"]) == {"kvmprep_max_fail_percentage": 0}


def test_serial_accepts_a_list_of_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def record(*_args: object, **kwargs: object) -> None:
        seen.update(kwargs["extravars"])  # type: ignore[arg-type]
        raise RuntimeError("stop here")

    monkeypatch.setattr(runner, "run_playbook", record)
    main(["apply", "-i", INVENTORY, "--serial", "1,10,50%", "--max-fail-percent", "20"])
    assert seen["kvmprep_serial"] == ["1", "10", "50%"]
    assert seen["kvmprep_max_fail_percentage"] == 20


# --- finding 10: --limit, inventories, paths, nesting, ONE_AUTH -------------------------------


@pytest.mark.usefixtures("no_run")
@pytest.mark.parametrize("command", ["apply", "check"])
def test_empty_limit_is_refused(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    for limit in ("", "  "):
        line = _refused([command, "-i", INVENTORY, "--limit", limit], capsys)
        assert "empty --limit" in line


@pytest.mark.usefixtures("no_run")
@pytest.mark.parametrize("pattern", ["kvm1:&[[[", "kvm1]", "~(unclosed", "a\nb"])
def test_a_host_pattern_ansible_cannot_parse_is_one_line(
    pattern: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _refused(["apply", "-i", INVENTORY, "--limit", pattern], capsys).startswith(
        "kvmprep: error: --limit"
    )


def test_ansibles_own_traceback_is_not_shown(tmp_path: Path) -> None:
    artifacts = tmp_path / "run"
    artifacts.mkdir()
    (artifacts / "stdout").write_text(
        "[WARNING]: Could not match supplied host pattern, ignoring: kvm1\n"
        "[ERROR]: Unexpected Exception, this is probably a bug: string index out of range\n"
        "\n"
        "Traceback (most recent call last):\n"
        '  File "/x/ansible/inventory/manager.py", line 611, in list_hosts\n'
        "IndexError: string index out of range\n"
        "\n"
        "The above exception was the direct cause of the following exception:\n"
        "\n"
        "Traceback (most recent call last):\n"
        '  File "/x/ansible/cli/__init__.py", line 597, in get_host_list\n'
        "ansible.errors.AnsibleError: Unexpected Exception, this is probably a bug\n"
    )
    error = runner._run_error(RunState(), "failed", artifacts)
    assert error == (
        "[ERROR]: Unexpected Exception, this is probably a bug: string index out of range"
    )


@pytest.mark.usefixtures("no_run")
def test_a_fifo_as_inventory_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "hosts.ini"
    os.mkfifo(fifo)
    line = _refused(["apply", "-i", str(fifo)], capsys)
    assert line == f"kvmprep: error: inventory {fifo}: not a regular file or a directory"
    # Ansible reads every file of an inventory directory: a FIFO there would block it too.
    directory = tmp_path / "inventory"
    (directory / "group_vars").mkdir(parents=True)
    (directory / "hosts.ini").write_text("[kvm_hosts]\n")
    os.mkfifo(directory / "group_vars" / "all.yml")
    line = _refused(["check", "-i", str(directory)], capsys)
    assert "group_vars/all.yml: not a regular file or a directory" in line


@pytest.mark.usefixtures("no_run")
def test_an_extra_vars_fifo_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "vars.yml"
    os.mkfifo(fifo)
    assert "not a regular file" in _refused(["apply", "-i", INVENTORY, "-e", f"@{fifo}"], capsys)


@pytest.mark.usefixtures("no_run")
def test_paths_that_are_not_utf8_are_refused_and_shown_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = os.fsdecode(b"hosts-\xff.ini")
    (tmp_path / name).write_text(Path(INVENTORY).read_text())
    line = _refused(["apply", "-i", str(tmp_path / name)], capsys)
    assert line == (
        f"kvmprep: error: inventory {tmp_path}/hosts-\\xff.ini: the path is not valid UTF-8"
    )
    report = str(tmp_path / os.fsdecode(b"report-\xfe.json"))
    line = _refused(["check", "-i", INVENTORY, "--format", "json", "-o", report], capsys)
    assert (
        line
        == f"kvmprep: error: --output {tmp_path}/report-\\xfe.json: the path is not valid UTF-8"
    )


@pytest.mark.usefixtures("no_run")
@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("deep.json", "[" * 10000 + "]" * 10000),
        ("deep.yml", "a: " + "[" * 10000 + "]" * 10000),
        ("deep_maps.yml", "a: " + "{b: " * 200 + "1" + "}" * 200),
    ],
)
def test_deep_nesting_in_extra_vars_is_refused(
    name: str, text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / name
    path.write_text(text)
    line = _refused(["apply", "-i", INVENTORY, "-e", f"@{path}"], capsys)
    assert line.startswith(f"kvmprep: error: -e @{path}: too deeply nested")


@pytest.mark.usefixtures("no_run")
def test_one_auth_that_cannot_be_read_names_the_file_not_its_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing"
    monkeypatch.setenv("ONE_AUTH", str(missing))
    line = _refused(["apply", "-i", INVENTORY], capsys)
    assert line.startswith(f"kvmprep: error: ONE_AUTH={missing}: no such file or directory")
    monkeypatch.setenv("ONE_AUTH", str(tmp_path))
    assert "not a regular file" in _refused(["apply", "-i", INVENTORY], capsys)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    monkeypatch.setenv("ONE_AUTH", str(empty))
    assert "the file is empty" in _refused(["apply", "-i", INVENTORY], capsys)


# --- finding 3: credentials in the endpoint URL -----------------------------------------------


@pytest.mark.usefixtures("no_run")
@pytest.mark.parametrize("command", ["apply", "check"])
def test_credentials_in_one_xmlrpc_are_refused_and_redacted(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ONE_XMLRPC", "http://oneadmin:hunter2pw@one.example.org:2633/RPC2")
    line = _refused([command, "-i", INVENTORY], capsys)
    assert line.startswith(
        "kvmprep: error: ONE_XMLRPC=http://***@one.example.org:2633/RPC2 holds credentials"
    )
    assert "ONE_AUTH" in line
    assert "one_frontend_auth" in line
    assert "hunter2pw" not in line


@pytest.mark.usefixtures("no_run")
def test_credentials_in_the_endpoint_extra_var_are_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = "https://a%40b:hunter2pw@one.example.org/RPC2"
    line = _refused(["apply", "-i", INVENTORY, "-e", f"one_frontend_xmlrpc={url}"], capsys)
    assert "-e one_frontend_xmlrpc=https://***@one.example.org/RPC2 holds credentials" in line
    assert "hunter2pw" not in line


def _frontend_inventory(tmp_path: Path, endpoint: str) -> str:
    inventory = tmp_path / "frontend.ini"
    inventory.write_text(
        "[frontend]\n"
        'fe ansible_connection=local ansible_python_interpreter="{{ ansible_playbook_python }}" '
        f"one_frontend_xmlrpc={endpoint} one_frontend_auth=oneadmin:opennebula\n"
    )
    return str(inventory)


@pytest.mark.ansible
def test_credentials_in_the_inventorys_endpoint_are_refused_before_any_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The apply playbook's first play (the front-end's API settings) alone.
    monkeypatch.setattr(content, "playbook", lambda _name: FIXTURES / "frontend_api.yml")
    inventory = _frontend_inventory(tmp_path, "http://oneadmin:hunter2pw@one.example.org:2633/RPC2")
    assert main(["apply", "-i", inventory]) == ExitStatus.USAGE
    err = capsys.readouterr().err
    assert (
        "fe: one_frontend_xmlrpc (or ONE_XMLRPC) http://***@one.example.org:2633/RPC2 holds "
        "credentials" in err
    )
    assert "hunter2pw" not in err
    artifacts = [p for p in Path(os.environ["KVMPREP_ARTIFACT_DIR"]).rglob("*") if p.is_file()]
    assert any(b"one.example.org" in p.read_bytes() for p in artifacts)  # the grep works
    assert [p for p in artifacts if b"hunter2pw" in p.read_bytes()] == []


@pytest.mark.ansible
@pytest.mark.parametrize("endpoint", ["one.example.org:2633", "ftp://one.example.org/RPC2"])
def test_an_inventorys_endpoint_that_is_not_a_url_is_an_input_error(
    endpoint: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(content, "playbook", lambda _name: FIXTURES / "frontend_api.yml")
    assert main(["apply", "-i", _frontend_inventory(tmp_path, endpoint)]) == ExitStatus.USAGE
    err = capsys.readouterr().err
    assert "(one_frontend_xmlrpc or ONE_XMLRPC) is not an http(s) URL" in " ".join(err.split())


# --- finding 4: http to another machine warns, loopback and https do not ------------------------


@pytest.mark.ansible
@pytest.mark.parametrize(
    ("endpoint", "warned"),
    [
        ("http://one.example.org:2633/RPC2", True),
        ("http://127.0.0.1:2633/RPC2", False),
        ("http://[::1]:2633/RPC2", False),
        ("https://one.example.org/RPC2", False),
    ],
)
def test_plain_http_to_another_machine_warns_once(
    endpoint: str,
    warned: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(content, "playbook", lambda _name: FIXTURES / "frontend_api.yml")
    assert main(["apply", "-i", _frontend_inventory(tmp_path, endpoint)]) == ExitStatus.OK
    err = capsys.readouterr().err
    warning = f"fe: OpenNebula endpoint {endpoint} is plain http: the session (user:password) "
    assert err.count(warning) == (1 if warned else 0), err
    if warned:
        assert "crosses the network in clear. Use https" in err


# --- finding 11: no secret in any artifact -----------------------------------------------------


@pytest.mark.ansible
def test_no_secret_in_any_artifact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(private))  # where the private data dir goes
    monkeypatch.setenv("ANSIBLE_BECOME_PASS", BECOME_PASS)
    monkeypatch.setattr(content, "playbook", lambda _name: FIXTURES / "secrets.yml")
    argv = ["apply", "-i", INVENTORY, "-e", f"kvm_host_libvirt_sasl_password={SASL_PASS}"]
    assert main(argv) == ExitStatus.OK, capsys.readouterr().err
    assert BECOME_PASS not in capsys.readouterr().err
    artifacts = Path(os.environ["KVMPREP_ARTIFACT_DIR"])
    files = [p for p in (*artifacts.rglob("*"), *private.rglob("*")) if p.is_file()]
    names = {p.name for p in files}
    assert {"command", "stdout"} <= names
    assert any(p.parent.name == "job_events" for p in files)
    # The marker, printed next to the secrets, is found: the search works.
    assert any(MARKER.encode() in p.read_bytes() for p in files)
    for secret in (BECOME_PASS, SASL_PASS):
        assert [p for p in files if secret.encode() in p.read_bytes()] == [], secret
    command = json.loads(next(p for p in files if p.name == "command").read_text())
    assert "ANSIBLE_BECOME_PASS" not in command["env"]
    assert list(private.iterdir()) == []  # the private data dir is gone


def test_secret_values_and_scrub() -> None:
    secrets = runner.secret_values(
        {"ANSIBLE_BECOME_PASS": "s3cret-become"},
        {
            "one_frontend_auth": "oneadmin:s3cret-one",
            "nested": {"api_token": ["tok-12345"], "plain": "visible"},
            "kvm_host_libvirt_sasl_password": "x",  # too short to scrub safely
            "kvm_host_libvirt_tcp_auth": "sasl",  # a setting, not a secret
            "kvm_host_one_repo_password": "True",  # a word every output holds
        },
    )
    assert set(secrets) == {
        "s3cret-become",
        "oneadmin:s3cret-one",
        "s3cret-one",
        "tok-12345",
    }
    event = {"res": {"msg": "a s3cret-one b", "list": ["tok-12345"], "n": 3}, "stdout": "visible"}
    assert runner.scrub(event, secrets) == {
        "res": {"msg": "a ******** b", "list": ["********"], "n": 3},
        "stdout": "visible",
    }
    assert runner.is_secret_env("ANSIBLE_BECOME_PASS")
    assert runner.is_secret_env("ANSIBLE_PRIVATE_KEY_PASSPHRASE")
    assert not runner.is_secret_env("ANSIBLE_VAULT_PASSWORD_FILE")
    assert not runner.is_secret_env("ANSIBLE_BECOME_ASK_PASS")
    assert not runner.is_secret_env("ANSIBLE_BYPASS_HOST_LOOP")


# --- finding 9: refused settings exit 1 with their messages ------------------------------------


def _failed(host: str, res: dict[str, object], action: str = "ansible.builtin.assert") -> dict:
    return {
        "event": "runner_on_failed",
        "event_data": {
            "host": host,
            "task": "Check the settings",
            "task_action": action,
            "res": res,
        },
    }


def _result(state: RunState, tmp_path: Path) -> RunResult:
    return RunResult(
        hosts=tuple(state.hosts.values()), artifact_dir=tmp_path, runner_status="failed", rc=2
    )


def test_refused_settings_exit_1_and_are_listed_per_host(tmp_path: Path) -> None:
    state = RunState()
    problems = ["kvm_host_oneadmin_user: 'ALL' is not allowed", "kvm_host_oneadmin_uid: 0"]
    state(_failed("h1", {"msg": "; ".join(problems), "kvmprep_invalid_settings": problems}))
    state(
        _failed(
            "h2",
            {
                "msg": "Validation of arguments failed:\nvalue of x must be one of: a, b",
                "argument_errors": [
                    "value of kvm_host_migration_transport must be one of: tcp, tls, ssh, got: udp"
                ],
            },
            action="ansible.builtin.validate_argument_spec",
        )
    )
    state(_failed("h3", {"msg": "Validation of arguments failed"}, action="validate_argument_spec"))
    result = _result(state, tmp_path)
    assert result.exit_status is ExitStatus.USAGE
    stream = io.StringIO()
    render_summary(result, stream, color=False)
    lines = stream.getvalue().splitlines()
    start = lines.index("Invalid settings (nothing was changed):")
    assert lines[start + 1 : start + 5] == [
        "h1: kvm_host_oneadmin_user: 'ALL' is not allowed",
        "h1: kvm_host_oneadmin_uid: 0",
        "h2: value of kvm_host_migration_transport must be one of: tcp, tls, ssh, got: udp",
        "h3: Validation of arguments failed",
    ]
    assert "FAILED at task" not in stream.getvalue()  # not the generic failure


def test_a_refusal_after_a_change_is_a_failure(tmp_path: Path) -> None:
    state = RunState()
    state({"event": "runner_on_ok", "event_data": {"host": "h1", "res": {"changed": True}}})
    state(_failed("h2", {"msg": "bad", "kvmprep_invalid_settings": ["kvm_host_x: bad"]}))
    state(_failed("h3", {"msg": "plain failure"}))
    result = _result(state, tmp_path)
    assert result.exit_status is ExitStatus.FAILED
    assert result.host("h3").invalid_settings == []


def test_an_ignored_refusal_is_not_one(tmp_path: Path) -> None:
    state = RunState()
    event = _failed("h1", {"msg": "bad", "kvmprep_invalid_settings": ["kvm_host_x: bad"]})
    event["event_data"]["ignore_errors"] = True
    state(event)
    assert _result(state, tmp_path).exit_status is ExitStatus.OK


def test_the_controller_side_settings_check_is_no_hosts_row(tmp_path: Path) -> None:
    # run_once on the controller for every host: Ansible reports it (and counts it in its stats)
    # under the play's first host, which it never reached.
    state = RunState()
    ok = {"host": "fe", "task": "Refuse settings", "task_action": "kvm_host_settings", "res": {}}
    state({"event": "runner_on_ok", "event_data": {**ok, "res": {"warnings": ["TLS: no DN list"]}}})
    state({"event": "runner_on_ok", "event_data": {"host": "kvm1", "res": {"changed": True}}})
    state(
        {
            "event": "playbook_on_stats",
            "event_data": {"ok": {"fe": 1, "kvm1": 1}, "changed": {"kvm1": 1}},
        }
    )
    result = _result(state, tmp_path)
    assert result.host("fe").ok == 0
    assert result.host("kvm1").ok == 1
    stream = io.StringIO()
    render_summary(result, stream, color=False)
    rows = [line.split()[0] for line in stream.getvalue().splitlines() if line.strip()]
    assert "kvm1" in rows
    assert "fe" not in rows
    assert "1 host: 1 changed" in stream.getvalue()
    assert "fe: TLS: no DN list" in stream.getvalue()  # its warning is still said


# --- finding 5: signals end the whole Ansible process tree -------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def _descendants(root: int) -> set[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))):
            parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if (fields := _stat(pid)) and fields[0] not in ("Z", "X")}


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.fixture
def slow_apply(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """kvmprep apply on the slow fixture (two hosts sleeping 20 s), with its own TMPDIR."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from kvmprep import cli, content\n"
        f"content.playbook = lambda name: Path({str(FIXTURES / 'slow.yml')!r})\n"
        f"sys.exit(cli.main(['apply', '-i', {INVENTORY!r}, '-e', 'kvm_host_x=1']))\n"
    )
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TMPDIR": str(tmp)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        yield proc, tmp
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.ansible
@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM])
def test_a_signal_ends_every_ansible_process_and_removes_the_temp_files(
    signum: signal.Signals, slow_apply: tuple[subprocess.Popen[str], Path]
) -> None:
    proc, tmp = slow_apply
    assert proc.stderr is not None
    for line in proc.stderr:  # task 1's line is logged when task 2 starts
        if line.startswith("[task 1] Report a change"):
            break
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # both hosts' `sleep 20` have started
        tree = _descendants(proc.pid)
        if sum(_command_line(pid).startswith("sleep 20") for pid in tree) == 2:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the sleeps did not start")
    assert [p.name for p in tmp.iterdir() if p.name.startswith("kvmprep-")]  # the private dir

    proc.send_signal(signum)
    rest = proc.stderr.read()
    assert proc.wait(timeout=30) == ExitStatus.INTERRUPTED, rest
    deadline = time.monotonic() + 10
    while _alive(tree) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert {pid: _command_line(pid) for pid in _alive(tree)} == {}
    assert "Interrupted: these hosts may be partially changed: localhost, second" in rest
    assert f"Ansible's processes were ended after {signum.name}" in rest
    assert "Traceback" not in rest
    assert [p.name for p in tmp.iterdir() if p.name.startswith("kvmprep-")] == []


def test_end_tree_terms_then_kills_processes_in_their_own_sessions() -> None:
    from kvmprep import processes

    # A parent with two children that left its session, as Ansible's workers do; one of them
    # ignores SIGTERM. The parent says ready once both children have said theirs (the one
    # that ignores SIGTERM, only after it does: killed before that, SIGTERM ends it).
    code = (
        "import os, signal, sys, time\n"
        "r, w = os.pipe()\n"
        "for ignore in (False, True):\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        if ignore:\n"
        "            signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "        os.write(w, b'c')\n"
        "        time.sleep(60)\n"
        "        os._exit(0)\n"
        "got = b''\n"
        "while len(got) < 2:\n"
        "    got += os.read(r, 2)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline() == "ready\n"
        tree = _descendants(parent.pid) | {parent.pid}
        assert len(tree) == 3
        started = time.monotonic()
        killed = processes.end_tree(parent.pid, grace=1.0)
        parent.wait(timeout=5)
        assert time.monotonic() - started < 5
        assert len(killed) == 1
        deadline = time.monotonic() + 5
        while _alive(tree) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _alive(tree) == set()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


@pytest.mark.ansible
def test_the_role_names_a_one_auth_file_it_cannot_read(tmp_path: Path) -> None:
    # Without kvmprep's own check (another client of the role): the no_log lookup's error
    # said only "output hidden"; the role names the file, never its content.
    inventory = tmp_path / "frontend.ini"
    inventory.write_text(
        "[frontend]\n"
        'fe ansible_connection=local ansible_python_interpreter="{{ ansible_playbook_python }}"\n'
    )
    missing = tmp_path / "one_auth"
    result = runner.run_playbook(
        FIXTURES / "frontend_api.yml",
        [inventory],
        environ={**os.environ, "ONE_AUTH": str(missing)},
    )
    fe = result.host("fe")
    assert fe.failed_task == "Fail when ONE_AUTH names a file that cannot be read"
    assert fe.message == (
        f"ONE_AUTH={missing}: the file is missing, unreadable or empty on the controller "
        "(it must hold user:password)"
    )


@pytest.mark.ansible
def test_the_role_does_not_read_one_auth_through_a_link_oneadmin_planted(tmp_path: Path) -> None:
    # oneadmin owns ~/.one: one_auth -> a root-only file would have root send that file's first
    # line to oned as the session. The link is refused, named, and nothing of the target shown.
    home = tmp_path / "one"
    (home / ".one").mkdir(parents=True)
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$not-a-real-hash:19000:0:99999:7:::\n")
    secret.chmod(0o600)
    (home / ".one" / "one_auth").symlink_to(secret)
    for path in (home / ".one" / "one_auth", home / ".one", home):
        os.lchown(path, 12345, 12345)
    inventory = tmp_path / "frontend.ini"
    inventory.write_text(
        "[frontend]\n"
        'fe ansible_connection=local ansible_python_interpreter="{{ ansible_playbook_python }}"\n'
    )
    environ = {k: v for k, v in os.environ.items() if k not in ("ONE_AUTH", "ONE_XMLRPC")}
    result = runner.run_playbook(
        FIXTURES / "frontend_api.yml",
        [inventory],
        extravars={
            "one_frontend_oneadmin_home": str(home),
            "one_frontend_xmlrpc": "http://127.0.0.1:2633/RPC2",
        },
        environ=environ,
    )
    fe = result.host("fe")
    assert fe.failed_task == "Fail when oneadmin's one_auth cannot be read safely"
    assert "is a symbolic link" in fe.message
    assert str(home / ".one" / "one_auth") in fe.message
    written = [f.read_bytes() for f in result.artifact_dir.rglob("*") if f.is_file()]
    assert any(b"one_auth" in data for data in written)  # the search can find what is there
    assert not any(b"not-a-real-hash" in data for data in written)
