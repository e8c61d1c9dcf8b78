"""The one parser of libvirt's configuration syntax (module_utils/kvm_host_libvirt_conf.py),
shared by the probe and kvm_host_conf, against what libvirt itself says.

LIBVIRT_9_0: each text with what libvirt 9.0's own parser (virConfReadString of Debian 12's
libvirt0 9.0.0-4+deb12u2, called through ctypes) read from it - the values of the names it
was asked about - or the line and message of the error it stopped at.
"""

import json

import pytest
from conftest import FIXTURES

from ansible_collections.kvmprep.kvm.plugins.module_utils import kvm_host_libvirt_conf as lvconf
from ansible_collections.kvmprep.kvm.plugins.module_utils import (
    kvm_host_probe_config as probe_config,
)
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls import libvirt
from ansible_collections.kvmprep.kvm.plugins.plugin_utils.controls.model import Expect, Status
from tests.unit.test_kvm_host_conf import conf

LIBVIRT_9_0 = [
    ('foo = [ "a",\n  # c\n  "b" ]\n', None, (2, "expecting a value")),
    ('foo = """oneadmin"""\n', {"foo": "oneadmin"}, None),
    ('foo = """a"""', {"foo": "a"}, None),
    ('foo = """"""\n', {"foo": ""}, None),
    ('foo = """"""', None, (1, "expecting a separator")),
    ("foo = 1\r\nbar = 2\r\n", {"foo": 1, "bar": 2}, None),
    ('foo = [ "a", ]\n', {"foo": ["a"]}, None),
    ('foo = [ [ "a" ] ]\n', {}, None),
    ("foo = 1; bar = 2\n", {"foo": 1, "bar": 2}, None),
    ("_foo = 1\n", None, (1, "expecting a name")),
    ("foo.bar = 1\n", None, (1, "expecting an assignment")),
    ('foo = [ 1, "a" ]\n', {}, None),
    ("foo = -\n", None, (1, "unterminated number")),
    ("foo = +5\n", {"foo": 5}, None),
    ('foo = [ "a", # c\n "b" ]\n', None, (1, "expecting a value")),
    ('foo = "a" # c\n', {"foo": "a"}, None),
    ('foo = "a" ;\n', {"foo": "a"}, None),
    ("foo = 1 ; ; bar = 2\n", None, (1, "expecting a name")),
    ("; foo = 1\n", None, (1, "expecting a name")),
    ("foo = 1\nfoo = 2\n", {"foo": 1}, None),
    ("foo = 'it''s'\n", None, (1, "expecting a separator")),
    ('foo = """multi\nline"""\n', {"foo": "multi\nline"}, None),
    ("foo = 5x\n", None, (1, "expecting a separator")),
    ('foo\t=\t"a"\n', {"foo": "a"}, None),
    ("foo = [\n]\n", {"foo": []}, None),
    ("foo = []\n", {"foo": []}, None),
    ('foo = [ "a"\n, "b" ]\n', {"foo": ["a", "b"]}, None),
    ("  foo = 1\n", {"foo": 1}, None),
    ("foo = 1 bar = 2\n", None, (1, "expecting a separator")),
    ('foo = """a""""\n', None, (1, "expecting a separator")),
    ('foo = "a\nb"\n', None, (1, "unterminated string")),
    ('foo = """ab\n', None, (1, "expecting a separator")),
    ("foo=1", {"foo": 1}, None),
    ('foo = 1 #c\nbar = "x" #d', {"foo": 1, "bar": "x"}, None),
    ('foo = ["a",\n\n"b"]\n', {"foo": ["a", "b"]}, None),
    ("1foo = 2\n", None, (1, "expecting a name")),
    ('foo = [ "a" ,\n', None, (2, "expecting a value")),
    ('foo = """x""" "y"\n', None, (1, "expecting a separator")),
    ('foo = """\n', None, (1, "expecting a separator")),
    ("x = 1\n= 2\n", None, (2, "expecting a name")),
    ("x = 1\nnot a setting\n", None, (2, "expecting an assignment")),
    ('x = [ "a",\n "b"\n', None, (3, "list is not closed with ]")),
    ("\n", None, (2, "expecting a name")),
    ("  \n", None, (2, "expecting a name")),
    ("\n\n# c\n", {}, None),
    ("# c", {}, None),
    ("foo = 1\n\n\n  ", {"foo": 1}, None),
    ("foo = 1;", {"foo": 1}, None),
    ("foo = 1;\n", {"foo": 1}, None),
    ('foo = "a\r"\n', None, (1, "unterminated string")),
    ("Foo9_x = 1\n", {"Foo9_x": 1}, None),
    ("foo = 99999999999999999999\n", {}, None),
    ('foo = "x"\t;\tbar = 1\n', {"foo": "x", "bar": 1}, None),
    ('foo = [ "a" ]  # c\n', {"foo": ["a"]}, None),
    ('foo = """ab\ncd\n', None, (2, "unterminated string")),
    ('\n\nfoo = """abcdefgh\nij\nk', None, (4, "unterminated string")),
    ("foo = 1 # c ; bar = 2\n", {"foo": 1}, None),
    ('foo = ["a"]]\n', None, (1, "expecting a separator")),
    ('foo = "é"\n', {"foo": "é"}, None),
    ("foo = 1\n\rbar = 2\n", {"foo": 1, "bar": 2}, None),
    ("foo =\n1\n", None, (1, "expecting a value")),
    ("foo\n= 1\n", None, (1, "expecting an assignment")),
    ('foo = [ "a"\r\n, "b" ]\n', {"foo": ["a", "b"]}, None),
    ("foo = ''\n", {"foo": ""}, None),
    ("foo = [ , ]\n", None, (1, "expecting a value")),
    ("foo = -5\n", {"foo": -5}, None),
]


@pytest.mark.parametrize(("text", "values", "error"), LIBVIRT_9_0)
def test_the_parser_reads_what_libvirt_reads(text, values, error):
    keys, _invalid, syntax_error = lvconf.read_conf(text)
    if error is None:
        assert syntax_error is None
        for name, value in values.items():
            assert keys[name] == value
    else:
        assert syntax_error == {"line": error[0], "message": error[1]}


def test_libvirt_reads_the_first_assignment():
    assert lvconf.read_conf('user = "root"\nuser = "oneadmin"\n')[0] == {"user": "root"}
    # The first one does not parse: libvirt does not start; the name is not reported as set.
    keys, invalid, error = lvconf.read_conf('user = root\nuser = "oneadmin"\n')
    assert (keys, invalid, error["line"]) == ({}, ["user"], 1)


@pytest.mark.parametrize("text", ['x = [ [ "a" ] ]\n', 'x = [ 1, "a" ]\n'])
def test_a_list_of_anything_but_strings_parses_but_is_invalid(text):
    # libvirt parses it, and then refuses it for every list setting ("expected a string list").
    assert lvconf.read_conf(text) == ({}, ["x"], None)


def test_the_parser_goes_on_after_an_error():
    text = 'a = "open\nb = 2\nc = [ "x",\n # no comment in a list\n "y" ]\nd = "z"\n'
    keys, invalid, error = lvconf.read_conf(text)
    assert error == {"line": 1, "message": "unterminated string"}
    assert keys == {"b": 2, "d": "z"}
    assert invalid == ["a", "c"]


@pytest.mark.parametrize(
    ("text", "eof"), [("[\n", False), ('[ "a",\n', False), ('"""open\n', False)]
)
def test_a_value_cut_short_is_incomplete_only_within_a_file(text, eof):
    with pytest.raises(lvconf.IncompleteValue):
        lvconf.parse_value(text, eof=eof)
    with pytest.raises(lvconf.ConfSyntaxError) as info:
        lvconf.parse_value(text, eof=True)
    assert not isinstance(info.value, lvconf.IncompleteValue)


# --- the probe and kvm_host_conf agree, and check judges what libvirt reads ----------------------

TRIPLE_QUOTED = 'user = """oneadmin"""\ngroup = "oneadmin"\ndynamic_ownership = 0\n'


def _converged_with_qemu_conf(tmp_path, text):
    """debian12-converged's facts, with the config group gathered from a qemu.conf of text."""
    qemu_conf = tmp_path / "qemu.conf"
    qemu_conf.write_text(text)
    facts = json.loads((FIXTURES / "facts" / "debian12-converged.json").read_text())
    gathered = probe_config.gather_config([], files=(("qemu.conf", str(qemu_conf)),))
    facts["config"]["qemu.conf"] = gathered["qemu.conf"]
    return facts


def test_a_triple_quoted_user_is_oneadmin_for_the_probe_kvm_host_conf_and_check(tmp_path):
    # What libvirt 9.0 reads (LIBVIRT_9_0): the string oneadmin, no syntax error.
    facts = _converged_with_qemu_conf(tmp_path, TRIPLE_QUOTED)
    entry = facts["config"]["qemu.conf"]
    assert (entry["keys"]["user"], entry["invalid"], entry["syntax_error"]) == (
        "oneadmin",
        [],
        None,
    )
    # kvm_host_conf reads the same value: nothing to change.
    assert conf.edit_config(TRIPLE_QUOTED, {"user": "oneadmin", "group": "oneadmin"}) == (
        TRIPLE_QUOTED,
        [],
    )
    # check: LV-002 (QEMU runs as oneadmin) and LV-008 (the file parses) pass.
    assert libvirt.qemu_user(facts, Expect()).status is Status.PASS
    assert libvirt.config_syntax(facts, Expect()).status is Status.PASS


def test_a_user_libvirt_cannot_parse_fails_lv_002_and_lv_008(tmp_path):
    facts = _converged_with_qemu_conf(tmp_path, TRIPLE_QUOTED.replace('"""oneadmin"""', "oneadmin"))
    assert libvirt.qemu_user(facts, Expect()).status is Status.FAIL
    assert libvirt.config_syntax(facts, Expect()).message.endswith("qemu.conf:1: expecting a value")
