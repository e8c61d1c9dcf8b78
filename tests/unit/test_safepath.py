"""Issue 16, findings 1, 2 and 15: root never follows a link, nor uses a path, that a less
privileged account controls (kvm_host_safepath, kvm_host_files, read_key_line, one_frontend_ssh,
one_frontend_trust, and the tasks that use them).

Each attack is played on a real temporary tree: the tests run as root, and the attacker is an
account of uid ATTACKER (oneadmin, or any local user) that owns the directories it controls and
the links it plants.
"""

from __future__ import annotations

import ast
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tests.unit.test_kvm_host_conf import ROOT, load_library_module, run_ansible

files = load_library_module("kvm_host_files")
ssh = load_library_module("one_frontend_ssh", library=ROOT / "plugins" / "modules")
trust = load_library_module("one_frontend_trust", library=ROOT / "plugins" / "modules")
from ansible_collections.kvmprep.kvm.plugins.module_utils import kvm_host_oneadmin as oneadmin  # noqa: E402
from ansible_collections.kvmprep.kvm.plugins.module_utils import kvm_host_safepath as safepath  # noqa: E402

ONEADMIN = 12345  # the account root writes for (oneadmin)
MALLORY = 12346  # a third account
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOq5"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="plays the attacks with chown: root")


def owned(path: Path, uid: int = ONEADMIN) -> Path:
    os.chown(path, uid, uid, follow_symlinks=False)
    return path


def plant(link: Path, target: Path | str, uid: int = ONEADMIN) -> Path:
    link.symlink_to(target)
    return owned(link, uid)


def tree(path: Path) -> dict[str, tuple[int, int, bytes | None]]:
    """Every path under path with its owner, mode and content: what an attack must not change."""
    found = {}
    for top, dirs, names in os.walk(path):
        for name in dirs + names:
            full = Path(top) / name
            st = full.lstat()
            data = full.read_bytes() if stat.S_ISREG(st.st_mode) else None
            found[str(full)] = (st.st_uid, st.st_mode, data)
    return found


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    """A root-owned directory standing for /etc: the target of every attack."""
    root = tmp_path / "etc"
    (root / "modprobe.d").mkdir(parents=True)
    (root / "shadow").write_text("root:$6$secret:19000:0:99999:7:::\n")
    (root / "shadow").chmod(0o640)
    (root / "modprobe.d" / "kvm.conf").write_text("options kvm ignore_msrs=1\n")
    return root


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """oneadmin's home (~/.ssh inside), owned by oneadmin."""
    path = tmp_path / "home"
    (path / ".ssh").mkdir(parents=True)
    owned(path)
    owned(path / ".ssh")
    return path


def files_entry(path: Path, **entry: object) -> dict[str, object]:
    return {"path": str(path), "owner": str(ONEADMIN), "group": str(ONEADMIN), **entry}


# --- the walker ------------------------------------------------------------------------------


def test_a_link_at_the_last_component_is_refused_naming_it(home: Path, etc: Path) -> None:
    plant(home / ".config", etc)
    with pytest.raises(safepath.UnsafePath) as caught:
        safepath.walk(str(home / ".config"))
    assert str(caught.value) == (
        f"{home}/.config is a symbolic link (owned by {ONEADMIN}): refusing to follow it as root"
    )


def test_a_link_at_an_intermediate_component_is_refused(home: Path, etc: Path) -> None:
    plant(home / ".config", etc)
    with pytest.raises(safepath.UnsafePath, match=r"\.config is a symbolic link"):
        safepath.walk(str(home / ".config" / "modprobe.d"))
    with pytest.raises(safepath.UnsafePath, match=r"\.config is a symbolic link"):
        safepath.read_file(str(home / ".config" / "shadow"))


def test_a_link_root_made_in_its_own_directory_is_followed(tmp_path: Path) -> None:
    # /var/run -> /run, /lib -> usr/lib: only root could have made or replaced them.
    var = tmp_path / "var"
    (tmp_path / "run" / "one").mkdir(parents=True)
    var.mkdir()
    (var / "run").symlink_to("../run")
    fd, parts, rest = safepath.walk(str(var / "run" / "one"))
    os.close(fd)
    assert safepath.join(parts) == str(tmp_path / "run" / "one")
    assert rest == []


def test_a_root_link_in_a_directory_others_may_write_is_not_trusted(tmp_path: Path) -> None:
    shared = tmp_path / "vartmp"
    shared.mkdir()
    shared.chmod(0o1777)  # /var/tmp: anyone may swap a link there, even root's
    (tmp_path / "elsewhere").mkdir()
    (shared / "one").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(safepath.UnsafePath, match="owned by root"):
        safepath.walk(str(shared / "one"))


def test_a_hard_link_to_a_root_file_in_oneadmins_directory_is_refused(
    home: Path, etc: Path
) -> None:
    os.link(etc / "shadow", home / ".ssh" / "id_ed25519.pub")
    with pytest.raises(safepath.UnsafePath, match="2 hard links"):
        safepath.read_file(str(home / ".ssh" / "id_ed25519.pub"))


# --- finding 1: read_key_line, one_frontend_ssh ------------------------------------------------


def test_a_public_key_linked_to_shadow_is_not_read(home: Path, etc: Path) -> None:
    plant(home / ".ssh" / "id_ed25519.pub", etc / "shadow")
    with pytest.raises(ValueError, match=r"id_ed25519\.pub is a symbolic link"):
        oneadmin.read_key_line(str(home / ".ssh" / "id_ed25519.pub"), owners=(0, ONEADMIN))


def test_the_ssh_dir_linked_to_roots_is_not_read(home: Path, tmp_path: Path) -> None:
    root_ssh = tmp_path / "root-ssh"
    root_ssh.mkdir()
    (root_ssh / "id_ed25519.pub").write_text(KEY + " root@host\n")
    (home / ".ssh").rmdir()
    plant(home / ".ssh", root_ssh)
    with pytest.raises(ValueError, match=r"home/\.ssh is a symbolic link"):
        oneadmin.read_key_line(str(home / ".ssh" / "id_ed25519.pub"), owners=(0, ONEADMIN))


@pytest.mark.parametrize(
    ("content", "uid", "problem"),
    [
        ("root:$6$secret:19000:0:99999:7:::\n", ONEADMIN, "is not a public key"),
        ("ssh-ed25519 not*base64 x\n", ONEADMIN, "is not a public key"),
        (KEY + " x\n", MALLORY, f"is owned by {MALLORY}, not by root or {ONEADMIN}"),
        (KEY + " " + "x" * 20000 + "\n", ONEADMIN, "is larger than 16384 bytes"),
    ],
)
def test_a_public_key_must_be_a_small_key_file_of_its_user(
    home: Path, content: str, uid: int, problem: str
) -> None:
    key = owned_file(home / ".ssh" / "id_ed25519.pub", content, uid)
    with pytest.raises(ValueError, match=problem):
        oneadmin.read_key_line(str(key), owners=(0, ONEADMIN))


def test_a_good_public_key_of_its_user_is_read(home: Path) -> None:
    key = owned_file(home / ".ssh" / "id_ed25519.pub", KEY + " oneadmin@one\n")
    assert oneadmin.read_key_line(str(key), owners=(0, ONEADMIN)) == KEY


def owned_file(path: Path, content: str, uid: int = ONEADMIN) -> Path:
    path.write_text(content)
    return owned(path, uid)


def test_the_probe_reports_a_planted_link_instead_of_reading_through_it(
    home: Path, tmp_path: Path
) -> None:
    roots = owned_file(tmp_path / "root_keys", KEY + " root@admin\n", uid=0)
    plant(home / ".ssh" / "authorized_keys", roots)
    errors: list[str] = []
    assert oneadmin._read_file(str(home / ".ssh" / "authorized_keys"), errors) is None
    assert errors == [
        f"cannot read {home}/.ssh/authorized_keys: {home}/.ssh/authorized_keys is a symbolic "
        f"link (owned by {ONEADMIN}): refusing to follow it as root"
    ]


def test_one_frontend_ssh_makes_the_ssh_dir_without_following_a_link(
    home: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "root-only"
    elsewhere.mkdir(mode=0o700)
    (home / ".ssh").rmdir()
    plant(home / ".ssh", elsewhere)
    account = SimpleNamespace(pw_dir=str(home), pw_uid=ONEADMIN, pw_gid=ONEADMIN)
    with pytest.raises(safepath.UnsafePath, match="symbolic link"):
        ssh.make_ssh_dir(str(home / ".ssh"), account)
    assert elsewhere.stat().st_uid == 0
    (home / ".ssh").unlink()
    ssh.make_ssh_dir(str(home / ".ssh"), account)
    made = (home / ".ssh").lstat()
    assert (made.st_uid, stat.S_IMODE(made.st_mode)) == (ONEADMIN, 0o700)


# --- finding 1: the trust blocks (one_frontend_trust) ------------------------------------------

MARKER = "# {mark} kvmprep: oneadmin keys of the OpenNebula front-end and hosts"


def run_trust(home: Path, lines: list[str], check: bool = False, name: str = "authorized_keys"):
    module = SimpleNamespace(
        check_mode=check, params={"file": name, "marker": MARKER, "lines": lines}
    )
    account = SimpleNamespace(pw_dir=str(home), pw_uid=ONEADMIN, pw_gid=ONEADMIN)
    return trust.write_block(module, account, 0o600)


def test_authorized_keys_linked_to_roots_is_refused_and_roots_untouched(
    home: Path, tmp_path: Path
) -> None:
    roots = owned_file(tmp_path / "root_authorized_keys", KEY + " admin@laptop\n", uid=0)
    plant(home / ".ssh" / "authorized_keys", roots)
    with pytest.raises(safepath.UnsafePath, match=r"authorized_keys is a symbolic link"):
        run_trust(home, ["ssh-ed25519 AAAAoneadmin"])
    assert roots.read_text() == KEY + " admin@laptop\n"
    assert (home / ".ssh" / "authorized_keys").is_symlink()


def test_the_block_is_written_as_blockinfile_wrote_it_and_kept_idempotent(home: Path) -> None:
    path = owned_file(
        home / ".ssh" / "authorized_keys",
        "ssh-rsa AAAAmine me@laptop\n"
        + MARKER.replace("{mark}", "BEGIN")
        + "\nssh-ed25519 AAAAold\n"
        + MARKER.replace("{mark}", "END")
        + "\nssh-rsa AAAAafter after@x",
    )
    path.chmod(0o644)
    checked = run_trust(home, ["ssh-ed25519 AAAAnew"], check=True)
    assert checked[0] is True
    assert "AAAAold" in path.read_text()
    changed, shown, diff = run_trust(home, ["ssh-ed25519 AAAAnew"])
    assert (changed, shown) == (True, str(path))
    assert diff["before"] != diff["after"]
    assert path.read_text() == (
        "ssh-rsa AAAAmine me@laptop\n"
        + MARKER.replace("{mark}", "BEGIN")
        + "\nssh-ed25519 AAAAnew\n"
        + MARKER.replace("{mark}", "END")
        + "\nssh-rsa AAAAafter after@x\n"
    )
    st = path.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (ONEADMIN, ONEADMIN, 0o600)
    assert run_trust(home, ["ssh-ed25519 AAAAnew"])[0] is False
    assert sorted(p.name for p in (home / ".ssh").iterdir()) == ["authorized_keys"]


def test_the_file_is_created_when_missing(home: Path) -> None:
    changed, _shown, _diff = run_trust(home, ["h1,10.0.0.1 " + KEY], name="known_hosts")
    assert changed is True
    known = home / ".ssh" / "known_hosts"
    assert known.read_text().splitlines()[1] == "h1,10.0.0.1 " + KEY
    assert known.stat().st_uid == ONEADMIN


def test_a_hard_link_to_a_root_file_as_authorized_keys_is_refused(
    home: Path, tmp_path: Path
) -> None:
    roots = owned_file(tmp_path / "root_authorized_keys", KEY + " admin\n", uid=0)
    os.link(roots, home / ".ssh" / "authorized_keys")
    with pytest.raises(safepath.UnsafePath, match="hard links"):
        run_trust(home, ["ssh-ed25519 AAAAoneadmin"])
    assert roots.read_text() == KEY + " admin\n"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        # Finding 12: a one_frontend_host_name with a newline adds a line of its own.
        (
            "kvm1,kvm1\n@cert-authority * ssh-rsa AAAAB3 " + KEY,
            r"refusing the line for kvm1 .*control character",
        ),
        ("kvm1,* " + KEY, r"refusing the line for kvm1 .*'\*' is not a host name"),
        ("@revoked " + KEY, r"'@revoked' is not a host name"),
        ("kvm1 " + KEY + " extra", "is not 'NAMES TYPE KEY'"),
        ("kvm1 sh " + KEY.split()[1], "'sh' is not an SSH key type"),
    ],
)
def test_known_hosts_lines_are_checked_before_anything_is_written(
    home: Path, line: str, problem: str
) -> None:
    with pytest.raises(safepath.UnsafePath, match=problem):
        trust.check_lines("known_hosts", [line])


def test_good_lines_pass_the_check() -> None:
    trust.check_lines(
        "known_hosts",
        ["kvm1,kvm1.lab,10.0.0.1,fd00::5,[kvm1]:2222 " + KEY, "|1|c2FsdA==|aGFzaA== " + KEY],
    )
    trust.check_lines("authorized_keys", [KEY])


@pytest.mark.ansible
def test_the_module_fails_with_one_line_naming_the_host(tmp_path: Path) -> None:
    result = run_ansible(
        tmp_path,
        "one_frontend_trust",
        {
            "user": "root",
            "file": "known_hosts",
            "marker": MARKER,
            "lines": ["kvm1,evil\n@cert-authority * " + KEY],
        },
        "--check",
        library=ROOT / "plugins" / "modules",
    )
    assert result["failed"] is True
    assert result["msg"].startswith("known_hosts: refusing the line for kvm1 ")
    assert "Traceback" not in result.get("module_stderr", "")


# --- finding 1: kvm_host_files in oneadmin's home ----------------------------------------------


@pytest.mark.ansible
def test_auth_conf_is_not_written_through_a_planted_config_link(
    tmp_path: Path, home: Path, etc: Path
) -> None:
    (home / ".config").mkdir()
    owned(home / ".config")
    plant(home / ".config" / "libvirt", etc / "modprobe.d")
    before = tree(etc)
    entries = [
        files_entry(home / ".config" / "libvirt", state="directory", mode="0700"),
        files_entry(
            home / ".config" / "libvirt" / "auth.conf", content="password=x\n", mode="0600"
        ),
    ]
    result = run_ansible(tmp_path, "kvm_host_files", {"files": entries})
    assert result["failed"] is True
    assert result["msg"] == (
        f"{home}/.config/libvirt is a symbolic link (owned by {ONEADMIN}): refusing to follow it "
        "as root"
    )
    assert tree(etc) == before

    (home / ".config" / "libvirt").unlink()
    done = run_ansible(tmp_path, "kvm_host_files", {"files": entries})
    assert done["changed"] is True
    auth = (home / ".config" / "libvirt" / "auth.conf").stat()
    assert (auth.st_uid, stat.S_IMODE(auth.st_mode)) == (ONEADMIN, 0o600)


@pytest.mark.ansible
def test_a_file_link_is_replaced_by_nothing_and_refused(
    tmp_path: Path, home: Path, etc: Path
) -> None:
    pki = home / ".pki"
    pki.mkdir()
    owned(pki)
    plant(pki / "clientkey.pem", etc / "shadow")
    before = tree(etc)
    entry = files_entry(pki / "clientkey.pem", content="KEY\n", mode="0600")
    for extra in ((), ("--check", "--diff")):
        result = run_ansible(tmp_path, "kvm_host_files", {"files": [entry]}, *extra)
        assert result["failed"] is True
        assert "clientkey.pem is a symbolic link" in result["msg"]
        # check mode must not show the root file as the "before" of a diff either
        assert "$6$secret" not in str(result)  # the planted target's content
    assert tree(etc) == before


# --- finding 2: the remotes dir ----------------------------------------------------------------


@pytest.fixture
def var_tmp(tmp_path: Path) -> Path:
    path = tmp_path / "vartmp"
    path.mkdir()
    path.chmod(0o1777)
    return path


def remotes_entry(path: Path, recurse: bool = False) -> dict[str, object]:
    return files_entry(path, state="directory", mode="0755", recurse=recurse)


@pytest.mark.ansible
def test_a_remotes_dir_another_user_made_is_refused(
    tmp_path: Path, var_tmp: Path, etc: Path
) -> None:
    remotes = var_tmp / "one"
    remotes.mkdir()
    owned(remotes, MALLORY)
    plant(remotes / "x", etc, MALLORY)
    before = tree(etc)
    for recurse in (False, True):
        result = run_ansible(
            tmp_path, "kvm_host_files", {"files": [remotes_entry(remotes, recurse)]}
        )
        assert result["failed"] is True
        assert result["msg"] == f"{remotes} is owned by {MALLORY}: refusing to take it over"
    assert tree(etc) == before
    assert remotes.stat().st_uid == MALLORY


@pytest.mark.ansible
def test_a_remotes_dir_that_is_a_link_is_refused(tmp_path: Path, var_tmp: Path, etc: Path) -> None:
    plant(var_tmp / "one", etc, MALLORY)
    result = run_ansible(tmp_path, "kvm_host_files", {"files": [remotes_entry(var_tmp / "one")]})
    assert result["failed"] is True
    assert result["msg"].startswith(f"{var_tmp}/one is a symbolic link (owned by {MALLORY})")
    assert etc.stat().st_uid == 0


@pytest.mark.ansible
def test_the_recursive_repair_never_follows_a_link(
    tmp_path: Path, var_tmp: Path, etc: Path
) -> None:
    # A root-owned leftover (an earlier `onehost sync` as root), with a link in it to /etc.
    remotes = var_tmp / "one"
    (remotes / "im" / "kvm.d").mkdir(parents=True)
    (remotes / "im" / "kvm.d" / "probe.rb").write_text("puts 1\n")
    (remotes / "x").symlink_to(etc)
    before = tree(etc)
    entry = remotes_entry(remotes, recurse=True)

    checked = run_ansible(tmp_path, "kvm_host_files", {"files": [entry]}, "--check", "--diff")
    assert checked["changed"] is True
    assert checked["files"][0]["recursed"] == 4
    assert remotes.stat().st_uid == 0

    done = run_ansible(tmp_path, "kvm_host_files", {"files": [entry]})
    assert done["changed"] is True
    assert tree(etc) == before
    for path in (remotes, remotes / "im", remotes / "im" / "kvm.d" / "probe.rb", remotes / "x"):
        assert path.lstat().st_uid == ONEADMIN, path
    again = run_ansible(tmp_path, "kvm_host_files", {"files": [entry]})
    assert again["changed"] is False


@pytest.mark.ansible
def test_the_recursive_repair_refuses_a_hard_link(tmp_path: Path, var_tmp: Path, etc: Path) -> None:
    remotes = var_tmp / "one"
    remotes.mkdir()
    os.link(etc / "shadow", remotes / "vmm")
    result = run_ansible(
        tmp_path, "kvm_host_files", {"files": [remotes_entry(remotes, recurse=True)]}
    )
    assert result["failed"] is True
    assert result["msg"].startswith(f"{remotes}/vmm has 2 hard links")
    assert (etc / "shadow").stat().st_uid == 0


# --- finding 15 and the tasks ------------------------------------------------------------------


@pytest.mark.ansible
def test_a_datastore_location_through_a_link_is_refused(
    tmp_path: Path, home: Path, etc: Path
) -> None:
    plant(home / "datastores", etc)
    entry = files_entry(home / "datastores" / "100", state="directory", mode="0750")
    result = run_ansible(tmp_path, "kvm_host_files", {"files": [entry]})
    assert result["failed"] is True
    assert "datastores is a symbolic link" in result["msg"]
    assert sorted(p.name for p in etc.iterdir()) == ["modprobe.d", "shadow"]
    assert stat.S_IMODE(etc.stat().st_mode) == 0o755


def task(path: str, name: str) -> dict[str, object]:
    tasks = yaml.safe_load((ROOT / path).read_text())
    return next(t for t in tasks if t.get("name") == name)


def test_the_tasks_write_through_the_link_safe_modules() -> None:
    repair = task(
        "roles/kvm_host/tasks/node_runtime.yml",
        "Give a root-owned leftover remotes directory back to oneadmin, with everything in it",
    )
    assert repair["kvmprep.kvm.kvm_host_files"]["files"][0]["recurse"] is True
    datastore = task(
        "roles/one_frontend/tasks/node.yml",
        "Create the front-end's datastore location on the host, owned by oneadmin",
    )
    assert "kvmprep.kvm.kvm_host_files" in datastore
    trust_tasks = yaml.safe_load((ROOT / "roles/one_frontend/tasks/trust.yml").read_text())
    modules = {key for t in trust_tasks for key in t if key not in ("name", "vars", "when")}
    assert "ansible.builtin.blockinfile" not in modules
    assert "kvmprep.kvm.one_frontend_trust" in modules


@pytest.mark.ansible
def test_the_front_ends_kvmrc_is_not_read_or_written_through_a_link(
    tmp_path: Path, home: Path, etc: Path
) -> None:
    # kvmrc is in the front-end's remotes, which oneadmin owns.
    kvmrc_dir = home / "remotes" / "etc" / "vmm" / "kvm"
    kvmrc_dir.mkdir(parents=True)
    owned(kvmrc_dir)
    plant(kvmrc_dir / "kvmrc", etc / "shadow")
    before = tree(etc)
    args = {"path": str(kvmrc_dir / "kvmrc"), "format": "shell", "settings": {"QEMU_PROTOCOL": "x"}}
    for extra in (("--check", "--diff"), ()):
        result = run_ansible(
            tmp_path, "one_frontend_conf", args, *extra, library=ROOT / "plugins/modules"
        )
        assert result["failed"] is True
        assert result["msg"] == (
            f"{kvmrc_dir}/kvmrc is a symbolic link (owned by {ONEADMIN}): refusing to follow it "
            "as root"
        )
        assert "$6$secret" not in str(result)  # the planted target's content
    assert tree(etc) == before

    (kvmrc_dir / "kvmrc").unlink()
    owned_file(kvmrc_dir / "kvmrc", "QEMU_PROTOCOL=qemu+ssh\n").chmod(0o644)
    done = run_ansible(tmp_path, "one_frontend_conf", args, library=ROOT / "plugins/modules")
    assert done["changed"] is True
    kvmrc = (kvmrc_dir / "kvmrc").stat()
    assert (kvmrc.st_uid, stat.S_IMODE(kvmrc.st_mode)) == (ONEADMIN, 0o644)
    assert Path(done["backup_file"]).read_text() == "QEMU_PROTOCOL=qemu+ssh\n"


@pytest.mark.parametrize(
    "path",
    [
        "plugins/module_utils/kvm_host_safepath.py",
        "plugins/modules/one_frontend_trust.py",
    ],
)
def test_the_target_side_code_parses_as_python_3_6(path: str) -> None:
    ast.parse((ROOT / path).read_text(), feature_version=(3, 6))
