"""kvm_host_snapshot (module_utils, used by the kvm_host_snapshot and kvm_host_files modules): a
restore makes the saved paths exactly what they were, including paths a run created after the
snapshot (removed) and trees (replaced whole)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from ansible_collections.kvmprep.kvm.plugins.module_utils import kvm_host_snapshot as snapshot


def make_tree(root: Path) -> None:
    (root / "etc" / "libvirt").mkdir(parents=True)
    (root / "etc" / "libvirt" / "qemu.conf").write_text('user = "root"\n')
    (root / "etc" / "libvirt" / "libvirtd.conf").write_text("listen_tcp = 0\n")
    (root / "etc" / "libvirt" / "libvirtd.conf").chmod(0o640)
    (root / "etc" / "pki" / "libvirt").mkdir(parents=True)
    (root / "etc" / "pki" / "libvirt" / "servercert.pem").write_text("old cert\n")
    (root / "units").mkdir()
    (root / "units" / "libvirtd-tcp.socket").symlink_to("/dev/null")


def test_restore_undoes_edits_creations_and_removals(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_tree(root)
    patterns = [
        f"{root}/etc/libvirt/*.conf",
        f"{root}/etc/pki/libvirt",
        f"{root}/units/libvirtd*",
        f"{root}/etc/default/libvirtd",  # absent when saved
    ]
    dest = str(tmp_path / "snap")
    saved, _ = snapshot.save(patterns, dest)
    assert f"{root}/etc/default/libvirtd" not in saved
    assert Path(dest).stat().st_mode & 0o777 == 0o700

    # What a run might do: edit, add a drop-in, replace a cert, unmask a socket, add a file.
    (root / "etc" / "libvirt" / "qemu.conf").write_text('user = "oneadmin"\nbroken\n')
    (root / "units" / "libvirtd.socket.d").mkdir()
    (root / "units" / "libvirtd.socket.d" / "kvmprep.conf").write_text("[Socket]\n")
    (root / "etc" / "pki" / "libvirt" / "servercert.pem").write_text("new cert\n")
    (root / "etc" / "pki" / "libvirt" / "serverkey.pem").write_text("new key\n")
    (root / "units" / "libvirtd-tcp.socket").unlink()
    (root / "etc" / "default").mkdir(parents=True)
    (root / "etc" / "default" / "libvirtd").write_text("LIBVIRTD_ARGS=--listen\n")

    restored, removed = snapshot.restore(dest)
    assert sorted(restored) == sorted(saved)
    assert sorted(removed) == sorted(
        [f"{root}/units/libvirtd.socket.d", f"{root}/etc/default/libvirtd"]
    )
    assert (root / "etc" / "libvirt" / "qemu.conf").read_text() == 'user = "root"\n'
    assert (root / "etc" / "libvirt" / "libvirtd.conf").stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in (root / "etc" / "pki" / "libvirt").iterdir()) == [
        "servercert.pem"
    ]
    assert (root / "etc" / "pki" / "libvirt" / "servercert.pem").read_text() == "old cert\n"
    assert str((root / "units" / "libvirtd-tcp.socket").readlink()) == "/dev/null"
    assert not (root / "etc" / "default" / "libvirtd").exists()


def test_a_new_snapshot_replaces_the_old_one(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_tree(root)
    dest = str(tmp_path / "snap")
    snapshot.save([f"{root}/etc/libvirt/*.conf"], dest)
    (root / "etc" / "libvirt" / "qemu.conf").write_text("second\n")
    snapshot.save([f"{root}/etc/libvirt/qemu.conf"], dest)
    (root / "etc" / "libvirt" / "qemu.conf").write_text("third\n")
    saved, removed = snapshot.restore(dest)
    assert saved == [f"{root}/etc/libvirt/qemu.conf"]
    assert removed == []
    assert (root / "etc" / "libvirt" / "qemu.conf").read_text() == "second\n"


def test_a_change_the_running_daemon_never_read_is_pending(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_tree(root)
    patterns = [f"{root}/etc/libvirt/*.conf", f"{root}/etc/pki/libvirt", f"{root}/units/libvirtd*"]
    dest = str(tmp_path / "snap")
    snapshot.save(patterns, dest)
    qemu = root / "etc" / "libvirt" / "qemu.conf"
    cert = root / "etc" / "pki" / "libvirt" / "servercert.pem"
    started = qemu.stat().st_mtime + 10  # the daemon started after the snapshot's files

    # Nothing changed, or changes the daemon started after: nothing pending.
    assert snapshot.pending_restart(dest, started) == []
    qemu.write_text('user = "oneadmin"\n')
    cert.unlink()
    for path in (qemu, cert.parent):
        os.utime(path, (started - 5, started - 5))
    assert snapshot.pending_restart(dest, started) == []

    # An interrupted run: the files changed after the daemon started, and it was not restarted.
    os.utime(qemu, (started + 5, started + 5))
    os.utime(cert.parent, (started + 5, started + 5))
    assert snapshot.pending_restart(dest, started) == sorted([str(cert), str(qemu)])
    # A daemon that does not run reads the files when it starts: nothing pending.
    assert snapshot.pending_restart(dest, None) == []
    # No earlier snapshot (the first run since boot): nothing to compare with.
    assert snapshot.pending_restart(str(tmp_path / "none"), started) == []


def test_the_start_of_a_daemon_that_does_not_run_is_none() -> None:
    class Done:
        stdout = "0\n"

    assert snapshot.daemon_started("libvirtd.service", run=lambda *a, **k: Done()) is None


def test_the_start_of_a_running_process_is_read_from_proc() -> None:
    class Done:
        stdout = f"{os.getpid()}\n"

    started = snapshot.daemon_started("any.service", run=lambda *a, **k: Done())
    assert started is not None
    assert 0 < time.time() - started < 24 * 3600


def test_a_file_written_just_before_a_restart_is_older_than_the_daemon(tmp_path: Path) -> None:
    # A whole-second boot time would put the start up to 1 s early: a file written a moment
    # before the daemon started must not look like a change the daemon never read.
    marker = tmp_path / "written-before"
    marker.write_text("x")
    time.sleep(0.05)
    child = subprocess.Popen(["sleep", "5"])
    try:

        class Done:
            stdout = f"{child.pid}\n"

        started = snapshot.daemon_started("any.service", run=lambda *a, **k: Done())
        assert started is not None
        assert marker.stat().st_mtime < started
        assert abs(time.time() - started) < 2
    finally:
        child.kill()
        child.wait()
