"""The kvm_host role refuses bad or unsafe input before its first change, through the same
`kvmprep apply` users run. Each case fails in the settings check of apply.yml's first play
(kvm_host_settings, on the controller), so these runs touch nothing on this machine (and run in
check mode besides)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmprep.cli import main
from kvmprep.exitcodes import ExitStatus

INVENTORY = Path(__file__).parent / "fixtures" / "inventory_local.ini"

pytestmark = pytest.mark.ansible


def apply(capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    args = ["apply", "-i", str(INVENTORY), "--check"]
    for item in extra:
        args += ["-e", item]
    status = main(args)
    return status, capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["kvm_host_migration_transport=udp"], "kvm_host_migration_transport"),
        (["kvm_host_oneadmin_uid=many"], "kvm_host_oneadmin_uid"),
        (["kvm_host_libvirt_layout=systemd"], "kvm_host_libvirt_layout"),
    ],
)
def test_argument_specs_reject_bad_values(capsys, extra, expected) -> None:
    status, err = apply(capsys, "kvm_host_libvirt_sasl_password=x", *extra)
    # A wrong setting is an input error (README: exit 1), listed per host with its variable.
    assert status == ExitStatus.USAGE
    assert f"{expected}: value " in err


def test_tcp_without_sasl_password_is_refused(capsys) -> None:
    status, err = apply(capsys)
    assert status == ExitStatus.USAGE
    assert "kvm_host_libvirt_sasl_password: value hidden: is empty" in err


def test_unauthenticated_tcp_needs_the_explicit_opt_in(capsys) -> None:
    status, err = apply(capsys, "kvm_host_libvirt_tcp_auth=none")
    assert status == ExitStatus.USAGE
    assert "kvm_host_libvirt_tcp_allow_unauthenticated" in err


@pytest.mark.parametrize(
    "extra",
    [
        'kvm_host_kvm_device_group="kvm\\", MODE=\\"0666"',
        "kvm_host_kvm_device_mode=0666,",
        "kvm_host_kvm_device_mode=rw-rw----",
    ],
)
def test_udev_rule_values_are_refused_before_they_reach_udev(capsys, extra) -> None:
    status, err = apply(capsys, "kvm_host_libvirt_sasl_password=x", extra)
    assert status == ExitStatus.USAGE
    assert f"{extra.split('=')[0]}: value " in err


def test_tls_without_certificates_is_refused(capsys) -> None:
    status, err = apply(capsys, "kvm_host_migration_transport=tls")
    assert status == ExitStatus.USAGE
    assert "kvm_host_libvirt_tls_ca_cert" in err


def test_serial_rollout_stops_after_a_failed_batch(capsys) -> None:
    inventory = Path(__file__).parent / "fixtures" / "inventory_rollout.ini"
    status = main(
        ["apply", "-i", str(inventory), "--check", "--serial", "1", "--max-fail-percent", "0"]
    )
    err = capsys.readouterr().err
    assert status == ExitStatus.FAILED
    rows = {line.split()[0]: line.split() for line in err.splitlines() if line.strip()}
    # The first batch failed, so the two other hosts were never touched.
    assert rows["first"][-1] == "FAILED"
    assert "second" not in rows
    assert "third" not in rows
    # ... and the summary says so, by name.
    assert (
        "Not reached (the rollout stopped before their batch; nothing ran on them): "
        "second, third" in err
    )


@pytest.mark.parametrize(
    ("option", "value"), [("--serial", "0"), ("--serial", "150%"), ("--max-fail-percent", "101")]
)
def test_rollout_options_are_validated(capsys, option, value) -> None:
    status = main(["apply", "-i", str(INVENTORY), option, value])
    assert status == ExitStatus.USAGE
    assert option in capsys.readouterr().err
