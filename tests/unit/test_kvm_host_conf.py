"""Tests of the kvm_host_conf module: pure functions, then end to end through Ansible."""

import ast
import importlib.util
import stat
import sys
from pathlib import Path

import pytest

from tests.unit.ansible_env import run_module_locally

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "plugins" / "modules"


def load_library_module(name, library=LIBRARY):
    """Import LIBRARY/NAME.py (plugins/modules by default) by path (it is not a package)."""
    path = library / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"kvmprep_library_{name}", path)
    module = importlib.util.module_from_spec(spec)
    # No __pycache__ inside plugins/modules: the module is loaded under a name of the tests.
    saved, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = saved
    return module


conf = load_library_module("kvm_host_conf")

# An excerpt of Debian 12's /etc/libvirt/qemu.conf (libvirt 9.0), with its commented examples.
QEMU_CONF = """\
# Master configuration file for the QEMU driver.
# All settings described here are optional - if omitted, sensible
# defaults are used.

# The default security driver is SELinux. If SELinux is disabled
# on the host, then the security driver will automatically disable
# itself. For example:
#
#       security_driver = [ "selinux", "apparmor" ]
#
#security_driver = "selinux"

# The user for QEMU processes run by the system instance. It can be
# specified as a user name or as a user id. The qemu driver will try to
# parse this value first as a name and then, if the name doesn't exist,
# as a user id.
#
# Some examples of valid values are:
#
#       user = "qemu"   # A user named "qemu"
#       user = "+0"     # Super user (uid=0)
#       user = "100"    # A user named "100" or a user with uid=100
#
#user = "root"

# The group for QEMU processes run by the system instance. It can be
# specified in a similar way to user.
#group = "root"

# Whether libvirt should dynamically change file ownership
# to match the configured user/group above. Defaults to 1.
# Set to 0 to disable file ownership changes.
#dynamic_ownership = 1

# Whether libvirt should remember and restore the original
# ownership over files it is relabeling. Defaults to 1, set
# to 0 to disable the feature.
#remember_owner = 1

# This is the basic set of devices allowed / required by
# all virtual machines.
#
#cgroup_device_acl = [
#    "/dev/null", "/dev/full", "/dev/zero",
#    "/dev/random", "/dev/urandom",
#    "/dev/ptmx", "/dev/kvm",
#    "/dev/userfaultfd"
#]
#
# RDMA migration requires the following extra files to be added to the list:
#   "/dev/infiniband/rdma_cm",

# Use of TLS requires that x509 certificates be issued.
#vnc_tls = 1
"""

# Debian 12's /etc/default/libvirtd (every assignment commented out).
DEFAULT_LIBVIRTD = """\
# Customizations for the libvirtd.service systemd unit

# Default behaviour is for libvirtd.service to start on boot
# so that VM autostart can be performed.
#LIBVIRTD_ARGS="--timeout 120"

# If systemd socket activation is disabled, then the following
# can be used to listen on TCP/TLS sockets
#LIBVIRTD_ARGS="--listen"

#############################################################
### The following settings are IGNORED when using systemd ###
#############################################################
#start_libvirtd=no
"""

ONEADMIN = {"user": "oneadmin", "group": "oneadmin", "dynamic_ownership": False}
# QEMU_CONF once ONEADMIN is applied, written out here rather than computed by the module: each
# setting right after its commented example (the only line that reads exactly so).
QEMU_CONF_ONEADMIN = (
    QEMU_CONF.replace('\n#user = "root"\n', '\n#user = "root"\nuser = "oneadmin"\n')
    .replace('\n#group = "root"\n', '\n#group = "root"\ngroup = "oneadmin"\n')
    .replace("\n#dynamic_ownership = 1\n", "\n#dynamic_ownership = 1\ndynamic_ownership = 0\n")
)


def added_lines(before, after):
    """Lines of after that are not in before, checking that before's lines all remain in order."""
    b = before.splitlines(True)
    extra = []
    i = 0
    for line in after.splitlines(True):
        if i < len(b) and line == b[i]:
            i += 1
        else:
            extra.append(line)
    assert i == len(b), "a line of the original was changed or removed"
    return extra


# --- rendering ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (True, "1"),
        (False, "0"),
        (0, "0"),
        (16509, "16509"),
        (-1, "-1"),
        ("oneadmin", '"oneadmin"'),
        ("", '""'),
        ("C:\\path", '"C:\\path"'),
        ('say "hi"', "'say \"hi\"'"),
        (["a", "b"], '[ "a", "b" ]'),
        (["/dev/null", 1], '[ "/dev/null", 1 ]'),
        ([], "[ ]"),
        ("two\nlines", '"""two\nlines"""'),
    ],
)
def test_render_libvirt_value(value, text):
    assert conf.render_libvirt_value(value) == text
    # Whatever is rendered parses back to the value (booleans become integers).
    expected = int(value) if isinstance(value, bool) else value
    assert conf.parse_libvirt_value(text) == expected


@pytest.mark.parametrize("value", [1.5, {"a": 1}, [["nested"]], [None], None])
def test_render_libvirt_value_rejects(value):
    with pytest.raises(ValueError):  # noqa: PT011 - several messages
        conf.render_libvirt_value(value)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("--timeout 120", '"--timeout 120"'),
        ("", '""'),
        (120, "120"),
        ('a "b" $HOME `x` \\', '"a \\"b\\" \\$HOME \\`x\\` \\\\"'),
    ],
)
def test_render_shell_value(value, text):
    assert conf.render_shell_value(value) == text
    assert conf.parse_shell_value(text) == str(value)


@pytest.mark.parametrize("value", [True, ["a"], 1.5])
def test_render_shell_value_rejects(value):
    with pytest.raises(ValueError):  # noqa: PT011
        conf.render_shell_value(value)


def test_render_line():
    assert conf.render_line("user", "oneadmin", "libvirt") == 'user = "oneadmin"'
    assert conf.render_line("LIBVIRTD_ARGS", "--listen", "shell") == 'LIBVIRTD_ARGS="--listen"'


# --- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (" 1\n", 1),
        ("+0", 0),
        ("-5", -5),
        (' "oneadmin"', "oneadmin"),
        ("'oneadmin'", "oneadmin"),
        ('"oneadmin"   # trailing comment\n', "oneadmin"),
        ("1 # Defaults to 1\n", 1),
        ('"x";\n', "x"),
        ('[ "cpu", "devices" ]\n', ["cpu", "devices"]),
        ('["cpu","devices",]', ["cpu", "devices"]),
        ("[]", []),
        (
            '[\n    "/dev/null", "/dev/full",\n    "/dev/kvm"\n]\n',
            ["/dev/null", "/dev/full", "/dev/kvm"],
        ),
        ('"""multi\nline"""', "multi\nline"),
        ('"back\\slash"', "back\\slash"),
    ],
)
def test_parse_libvirt_value(text, value):
    assert conf.parse_libvirt_value(text) == value


@pytest.mark.parametrize("text", ["oneadmin\n", '"unterminated\n', "1 2\n", "\n", '[ "a" "b" ]'])
def test_parse_libvirt_value_invalid(text):
    with pytest.raises(ValueError):  # noqa: PT011
        conf.parse_libvirt_value(text)


@pytest.mark.parametrize("text", ["[\n", '[ "a",\n', '"""open\n'])
def test_parse_libvirt_value_incomplete(text):
    with pytest.raises(conf.IncompleteValue):
        conf.parse_libvirt_value(text)


@pytest.mark.parametrize(
    ("text", "value", "expansion"),
    [
        ('"--timeout 120"\n', "--timeout 120", False),
        ("'--timeout 120'", "--timeout 120", False),
        ("--listen\n", "--listen", False),
        ("", "", False),
        ('"a\\"b" # comment\n', 'a"b', False),
        ('"$OTHER --listen"', "$OTHER --listen", True),
        ("'$literal'", "$literal", False),
    ],
)
def test_parse_shell_word(text, value, expansion):
    assert conf.parse_shell_word(text) == (value, expansion)


def test_parse_shell_word_incomplete_and_invalid():
    with pytest.raises(conf.IncompleteValue):
        conf.parse_shell_word('"open\n')
    with pytest.raises(ValueError):  # noqa: PT011
        conf.parse_shell_word("a b\n")


def test_split_lines_keeps_every_byte():
    text = "a\n\x0cb\r\nc"
    assert conf.split_lines(text) == ["a\n", "\x0cb\r\n", "c"]
    assert "".join(conf.split_lines(text)) == text
    assert conf.split_lines("") == []


# --- the edit algorithm, libvirt style ------------------------------------------------------


def test_qemu_conf_inserts_after_the_last_commented_example():
    after, keys = conf.edit_config(QEMU_CONF, ONEADMIN)
    assert keys == ["user", "group", "dynamic_ownership"]
    assert after == QEMU_CONF_ONEADMIN
    assert added_lines(QEMU_CONF, after) == [
        'user = "oneadmin"\n',
        'group = "oneadmin"\n',
        "dynamic_ownership = 0\n",
    ]
    # Right after the last commented example, not after the indented ones in the help text.
    assert '#user = "root"\nuser = "oneadmin"\n' in after
    assert '#group = "root"\ngroup = "oneadmin"\n' in after
    assert "#dynamic_ownership = 1\ndynamic_ownership = 0\n" in after
    assert '#       user = "qemu"   # A user named "qemu"\n#       user = "+0"' in after


def test_qemu_conf_is_idempotent():
    once, _ = conf.edit_config(QEMU_CONF, ONEADMIN)
    twice, keys = conf.edit_config(once, ONEADMIN)
    assert twice == once
    assert keys == []


def test_equal_values_in_another_spelling_stay_untouched():
    text = "user=\"oneadmin\"\ngroup = 'oneadmin'   # set by hand\n  dynamic_ownership=0\n"
    after, keys = conf.edit_config(text, ONEADMIN)
    assert after == text
    assert keys == []


def test_active_lines_are_replaced_in_place():
    text = '# head\nuser = "root"\n# middle\ndynamic_ownership = 1 # default\n# tail\n'
    after, keys = conf.edit_config(text, ONEADMIN)
    assert after == (
        '# head\nuser = "oneadmin"\n# middle\ndynamic_ownership = 0\n# tail\ngroup = "oneadmin"\n'
    )
    assert keys == ["user", "group", "dynamic_ownership"]


def test_every_active_assignment_is_replaced_and_indentation_kept():
    text = 'user = "root"\n  user = "qemu"\nuser = "oneadmin"\n'
    after, keys = conf.edit_config(text, {"user": "oneadmin"})
    assert after == 'user = "oneadmin"\n  user = "oneadmin"\nuser = "oneadmin"\n'
    assert keys == ["user"]


def test_type_matters_string_one_is_not_integer_one():
    after, keys = conf.edit_config('listen_tcp = "1"\n', {"listen_tcp": True})
    assert after == "listen_tcp = 1\n"
    assert keys == ["listen_tcp"]


def test_unparsable_active_value_is_replaced():
    after, _ = conf.edit_config("user = oneadmin\n", {"user": "oneadmin"})
    assert after == 'user = "oneadmin"\n'


def test_append_when_no_example_and_add_missing_newline():
    after, keys = conf.edit_config("# only a comment", {"listen_tcp": 1, "auth_tcp": "sasl"})
    assert after == '# only a comment\nlisten_tcp = 1\nauth_tcp = "sasl"\n'
    assert keys == ["listen_tcp", "auth_tcp"]
    assert conf.edit_config("", {"a": 1}) == ("a = 1\n", ["a"])


def test_list_value_after_a_commented_multiline_list():
    acl = ["/dev/null", "/dev/kvm", "/dev/net/tun"]
    after, keys = conf.edit_config(QEMU_CONF, {"cgroup_device_acl": acl})
    assert keys == ["cgroup_device_acl"]
    line = 'cgroup_device_acl = [ "/dev/null", "/dev/kvm", "/dev/net/tun" ]\n'
    assert '#    "/dev/userfaultfd"\n#]\n' + line in after
    assert conf.edit_config(after, {"cgroup_device_acl": acl}) == (after, [])


def test_multiline_active_list_is_replaced_as_a_whole():
    text = 'a = 1\ncgroup_device_acl = [\n    "/dev/null",\n    "/dev/kvm"\n]\nb = 2\n'
    same, keys = conf.edit_config(text, {"cgroup_device_acl": ["/dev/null", "/dev/kvm"]})
    assert (same, keys) == (text, [])
    after, keys = conf.edit_config(text, {"cgroup_device_acl": ["/dev/kvm"]})
    assert after == 'a = 1\ncgroup_device_acl = [ "/dev/kvm" ]\nb = 2\n'
    removed, _ = conf.edit_config(text, {"cgroup_device_acl": None})
    assert (
        removed == 'a = 1\n#cgroup_device_acl = [\n#    "/dev/null",\n#    "/dev/kvm"\n#]\nb = 2\n'
    )


def test_unterminated_multiline_value_is_an_error():
    with pytest.raises(ValueError, match="cannot find the end"):
        conf.edit_config('x = [\n  "a",\n', {"x": ["a"]})


def test_null_comments_out_active_lines_idempotently():
    text = 'listen_tcp = 1\n#listen_addr = "0.0.0.0"\nlisten_addr = "0.0.0.0"\n'
    after, keys = conf.edit_config(text, {"listen_addr": None, "listen_tcp": 1})
    assert after == 'listen_tcp = 1\n#listen_addr = "0.0.0.0"\n#listen_addr = "0.0.0.0"\n'
    assert keys == ["listen_addr"]
    assert conf.edit_config(after, {"listen_addr": None}) == (after, [])
    # A key that is nowhere active is already absent.
    assert conf.edit_config(QEMU_CONF, {"user": None}) == (QEMU_CONF, [])


def test_similar_key_names_do_not_match():
    text = 'user_namespace = 1\n#users = "x"\nmy_user = "x"\n'
    after, _ = conf.edit_config(text, {"user": "oneadmin"})
    assert after == text + 'user = "oneadmin"\n'


def test_crlf_and_other_bytes_are_preserved():
    text = '# c\r\nuser = "root"\r\n#group = "root"\r\n'
    after, _ = conf.edit_config(text, ONEADMIN)
    assert after == '# c\r\nuser = "oneadmin"\r\n#group = "root"\r\ngroup = "oneadmin"\n' + (
        "dynamic_ownership = 0\n"
    )


@pytest.mark.parametrize(
    ("settings", "style", "message"),
    [
        ({"bad key": 1}, "libvirt", "invalid key"),
        ({"x": {"add_words": ["a"]}}, "libvirt", "style=shell"),
        ({"x": {"add": ["a"]}}, "shell", "only add_words"),
        ({"x": {"add_words": ["two words"]}}, "shell", "without spaces"),
        ({"x": True}, "shell", "booleans"),
        ({"x": 1.5}, "libvirt", "unsupported"),
    ],
)
def test_invalid_settings(settings, style, message):
    with pytest.raises(ValueError, match=message):
        conf.edit_config("", settings, style)


# --- the edit algorithm, shell style --------------------------------------------------------


def test_shell_add_words_to_an_active_value():
    text = 'LIBVIRTD_ARGS="--timeout 120"\n'
    edit = {"LIBVIRTD_ARGS": {"add_words": ["--listen"]}}
    after, keys = conf.edit_config(text, edit, "shell")
    assert after == 'LIBVIRTD_ARGS="--timeout 120 --listen"\n'
    assert keys == ["LIBVIRTD_ARGS"]
    assert conf.edit_config(after, edit, "shell") == (after, [])


def test_shell_remove_both_spellings():
    edit = {"LIBVIRTD_ARGS": {"remove_words": ["-l", "--listen"]}}
    after, _ = conf.edit_config('LIBVIRTD_ARGS="-l --timeout 120 --listen"\n', edit, "shell")
    assert after == 'LIBVIRTD_ARGS="--timeout 120"\n'
    assert conf.edit_config(after, edit, "shell") == (after, [])


def test_shell_words_on_debian_defaults_file():
    # Debian 12 ships every assignment commented: the current value is empty.
    edit = {"LIBVIRTD_ARGS": {"add_words": ["--listen"]}}
    after, keys = conf.edit_config(DEFAULT_LIBVIRTD, edit, "shell")
    assert keys == ["LIBVIRTD_ARGS"]
    assert added_lines(DEFAULT_LIBVIRTD, after) == ['LIBVIRTD_ARGS="--listen"\n']
    assert '#LIBVIRTD_ARGS="--listen"\nLIBVIRTD_ARGS="--listen"\n' in after
    assert conf.edit_config(after, edit, "shell") == (after, [])
    # Removing words from an unset key changes nothing.
    remove = {"LIBVIRTD_ARGS": {"remove_words": ["--listen"]}}
    assert conf.edit_config(DEFAULT_LIBVIRTD, remove, "shell") == (DEFAULT_LIBVIRTD, [])
    # Removing the last word leaves an empty value, not a missing key.
    emptied, _ = conf.edit_config(after, remove, "shell")
    assert 'LIBVIRTD_ARGS=""\n' in emptied


def test_shell_words_keep_spacing_when_nothing_changes():
    text = "LIBVIRTD_ARGS='--timeout  120'\n"
    edit = {"LIBVIRTD_ARGS": {"add_words": ["120"], "remove_words": ["--listen"]}}
    assert conf.edit_config(text, edit, "shell") == (text, [])


def test_shell_words_refuse_expansions():
    edit = {"LIBVIRTD_ARGS": {"add_words": ["--listen"]}}
    with pytest.raises(ValueError, match="expansion"):
        conf.edit_config('LIBVIRTD_ARGS="$EXTRA"\n', edit, "shell")


def test_shell_plain_values_compare_unquoted():
    text = "LIBVIRTD_ARGS='--listen'\nPORT=16509\n"
    settings = {"LIBVIRTD_ARGS": "--listen", "PORT": 16509}
    assert conf.edit_config(text, settings, "shell") == (text, [])
    after, keys = conf.edit_config(text, {"PORT": "$HOME", "start_libvirtd": None}, "shell")
    assert after == "LIBVIRTD_ARGS='--listen'\nPORT=\"\\$HOME\"\n"
    assert keys == ["PORT"]
    commented, _ = conf.edit_config(after, {"LIBVIRTD_ARGS": None}, "shell")
    assert commented.startswith("#LIBVIRTD_ARGS='--listen'\n")


def test_edit_words():
    assert conf.edit_words("--timeout 120", ["--listen"], None) == ["--timeout", "120", "--listen"]
    assert conf.edit_words(None, ["-l"], ["-l"]) == ["-l"]
    assert conf.edit_words("-l --listen x", None, ["-l", "--listen"]) == ["x"]


def test_module_source_parses_as_python_3_6():
    source = (LIBRARY / "kvm_host_conf.py").read_text()
    ast.parse(source, feature_version=(3, 6))


# --- end to end through Ansible -------------------------------------------------------------


def run_ansible(tmp_path, module, args, *extra, library=LIBRARY):
    """Run one module of library on localhost with the ansible CLI; return its result dict."""
    return run_module_locally(
        tmp_path,
        module,
        args,
        "-M",
        str(library),
        *extra,
        ANSIBLE_REMOTE_TEMP=str(tmp_path / ".ansible" / "remote"),
    )


def _backups(path):
    return sorted(p for p in path.parent.iterdir() if p.name.startswith(path.name + "."))


def check_apply_again(tmp_path, module, args, target, expected, library=LIBRARY):
    """Run a file-editing module with --check --diff, for real, then again; return the results.

    Asserts the contract the config modules share: check mode writes nothing and shows the diff,
    the real run writes expected with a backup and the file's mode, the second run is a no-op.
    """
    before = target.read_text()
    mode = stat.S_IMODE(target.stat().st_mode)

    checked = run_ansible(tmp_path, module, args, "--check", "--diff", library=library)
    assert checked["changed"] is True
    assert checked["diff"]["before"] == before
    assert checked["diff"]["after"] == expected
    assert checked["diff"]["before_header"] == str(target)
    assert target.read_text() == before
    assert _backups(target) == []

    applied = run_ansible(tmp_path, module, args, library=library)
    assert applied["changed"] is True
    assert applied["keys_changed"] == checked["keys_changed"]
    # Without --diff too: the module returns the change's diff whatever the mode (Ansible
    # shows it in diff mode only); a no-op run has none.
    assert applied["diff"] == checked["diff"]
    assert target.read_text() == expected
    assert stat.S_IMODE(target.stat().st_mode) == mode
    backups = _backups(target)
    assert [str(b) for b in backups] == [applied["backup_file"]]
    assert backups[0].read_text() == before

    again = run_ansible(tmp_path, module, args, library=library)
    assert again["changed"] is False
    assert again["keys_changed"] == []
    assert "backup_file" not in again
    assert "diff" not in again
    assert _backups(target) == backups
    assert [p.name for p in target.parent.iterdir() if p.name.startswith(".")] == []
    return checked, applied, again


@pytest.mark.ansible
def test_ansible_end_to_end_on_qemu_conf(tmp_path):
    target = tmp_path / "etc" / "qemu.conf"
    target.parent.mkdir()
    target.write_text(QEMU_CONF)
    target.chmod(0o640)
    args = {"path": str(target), "settings": ONEADMIN}
    checked, _, _ = check_apply_again(tmp_path, "kvm_host_conf", args, target, QEMU_CONF_ONEADMIN)
    assert checked["keys_changed"] == ["user", "group", "dynamic_ownership"]


@pytest.mark.ansible
def test_ansible_end_to_end_shell_create_and_missing(tmp_path):
    missing = tmp_path / "libvirtd"
    args = {
        "path": str(missing),
        "style": "shell",
        "settings": {"LIBVIRTD_ARGS": {"add_words": ["--listen"]}},
    }
    failed = run_ansible(tmp_path, "kvm_host_conf", args)
    assert failed.get("failed") is True
    assert "does not exist" in failed["msg"]
    assert not missing.exists()

    would = run_ansible(tmp_path, "kvm_host_conf", dict(args, create=True), "--check")
    assert would["changed"] is True
    assert not missing.exists()

    created = run_ansible(tmp_path, "kvm_host_conf", dict(args, create=True, mode="0644"))
    assert created["changed"] is True
    assert "backup_file" not in created
    assert missing.read_text() == 'LIBVIRTD_ARGS="--listen"\n'
    assert stat.S_IMODE(missing.stat().st_mode) == 0o644

    bad = run_ansible(tmp_path, "kvm_host_conf", dict(args, style="libvirt"))
    assert bad.get("failed") is True
    assert "style=shell" in bad["msg"]


@pytest.mark.ansible
def test_ansible_edits_several_files_in_one_call(tmp_path):
    qemu = tmp_path / "qemu.conf"
    qemu.write_text(QEMU_CONF)
    defaults = tmp_path / "libvirtd"
    args = {
        "edits": [
            {"path": str(qemu), "settings": ONEADMIN},
            {
                "path": str(defaults),
                "style": "shell",
                "create": True,
                "mode": "0644",
                "settings": {"LIBVIRTD_ARGS": {"add_words": ["--listen"]}},
            },
        ]
    }
    expected = QEMU_CONF_ONEADMIN

    checked = run_ansible(tmp_path, "kvm_host_conf", args, "--check", "--diff")
    assert checked["changed"] is True
    assert [d["after_header"] for d in checked["diff"]] == [str(qemu), str(defaults)]
    assert checked["diff"][0]["after"] == expected
    assert qemu.read_text() == QEMU_CONF
    assert not defaults.exists()

    applied = run_ansible(tmp_path, "kvm_host_conf", args)
    assert [e["changed"] for e in applied["edits"]] == [True, True]
    assert applied["edits"][0]["keys_changed"] == ["user", "group", "dynamic_ownership"]
    assert Path(applied["edits"][0]["backup_file"]).read_text() == QEMU_CONF
    assert "backup_file" not in applied["edits"][1]  # created, nothing to back up
    assert qemu.read_text() == expected
    assert defaults.read_text() == 'LIBVIRTD_ARGS="--listen"\n'
    assert stat.S_IMODE(defaults.stat().st_mode) == 0o644

    again = run_ansible(tmp_path, "kvm_host_conf", args)
    assert again["changed"] is False
    assert [e["changed"] for e in again["edits"]] == [False, False]

    # Only the file that differs changes; a mode drift alone counts as a change.
    defaults.chmod(0o600)
    drift = run_ansible(tmp_path, "kvm_host_conf", args)
    assert [e["changed"] for e in drift["edits"]] == [False, True]
    assert stat.S_IMODE(defaults.stat().st_mode) == 0o644


@pytest.mark.ansible
def test_ansible_edits_stop_at_the_first_file_that_fails(tmp_path):
    qemu = tmp_path / "qemu.conf"
    qemu.write_text(QEMU_CONF)
    later = tmp_path / "later.conf"
    later.write_text("")
    args = {
        "edits": [
            {"path": str(qemu), "settings": ONEADMIN},
            {"path": str(tmp_path / "missing.conf"), "settings": {"a": 1}},
            {"path": str(later), "settings": {"a": 1}},
        ]
    }
    failed = run_ansible(tmp_path, "kvm_host_conf", args)
    assert failed.get("failed") is True
    assert "missing.conf does not exist" in failed["msg"]
    assert qemu.read_text() == QEMU_CONF_ONEADMIN  # done before it
    assert later.read_text() == ""  # never reached

    both = run_ansible(tmp_path, "kvm_host_conf", dict(args, path=str(qemu), settings={"a": 1}))
    assert both.get("failed") is True
    assert "mutually exclusive" in both["msg"]


def test_change_sentences_say_old_and_new_value_but_never_a_secret_keys():
    before = 'dynamic_ownership = 1\nuser = "root"\nsasl_password = "old-s3cret"\n'
    settings = {"dynamic_ownership": 0, "user": "oneadmin", "group": "kvm", "sasl_password": "n3w"}
    after, keys = conf.edit_config(before, settings)
    assert conf.change_sentences(
        "/etc/libvirt/qemu.conf", before, after, keys, "libvirt", False
    ) == [
        "qemu.conf: dynamic_ownership 1 -> 0",
        'qemu.conf: user "root" -> "oneadmin"',
        'qemu.conf: group not set -> "kvm"',
        "qemu.conf: sasl_password changed",
    ]
    shell = 'LIBVIRTD_ARGS="--timeout 120"\n'
    edit = {"LIBVIRTD_ARGS": {"add_words": ["--listen"]}}
    after, keys = conf.edit_config(shell, edit, "shell")
    assert conf.change_sentences("/etc/default/libvirtd", shell, after, keys, "shell", False) == [
        'libvirtd: LIBVIRTD_ARGS "--timeout 120" -> "--timeout 120 --listen"'
    ]
    assert conf.change_sentences("/etc/x.conf", "", "a = 1\n", ["a"], "libvirt", True) == [
        "x.conf: created",
        "x.conf: a not set -> 1",
    ]
