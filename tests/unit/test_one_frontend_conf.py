"""Tests of the one_frontend_conf module: parser, edits on fixture files, then through Ansible."""

import ast
from pathlib import Path

import pytest
import yaml
from test_kvm_host_conf import check_apply_again, load_library_module, run_ansible

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "plugins" / "modules"
FIXTURES = Path(__file__).parent / "fixtures" / "one"

conf = load_library_module("one_frontend_conf", LIBRARY)

ONED_3X = (FIXTURES / "oned-3.x.conf").read_text()
ONED = (FIXTURES / "oned-current.conf").read_text()
MONITORD = (FIXTURES / "monitord.conf").read_text()
VMM_KVM = (FIXTURES / "vmm_exec_kvm.conf").read_text()
KVMRC = (FIXTURES / "kvmrc").read_text()

# The KVM drivers as the OpenNebula 3.0 guide writes them (lower-case keys), and the current ones.
KVM_3X = [
    {
        "name": "IM_MAD",
        "match": {"name": "im_kvm"},
        "attributes": {"executable": "one_im_ssh", "arguments": "-r 0 -t 15 kvm"},
    },
    {
        "name": "VM_MAD",
        "match": {"name": "vmm_kvm"},
        "attributes": {
            "executable": "one_vmm_exec",
            "arguments": "-t 15 -r 0 kvm",
            "default": "vmm_exec/vmm_exec_kvm.conf",
            "type": "kvm",
        },
    },
]
# oned.conf 3.x's commented examples of the KVM drivers; KVM_3X enabled, each example is followed
# by the same section uncommented (written out here rather than computed by the module).
IM_3X_EXAMPLE = (
    "#IM_MAD = [\n"
    '#      name       = "im_kvm",\n'
    '#      executable = "one_im_ssh",\n'
    '#      arguments  = "-r 0 -t 15 kvm" ]\n'
)
VM_3X_EXAMPLE = (
    "#VM_MAD = [\n"
    '#    name       = "vmm_kvm",\n'
    '#    executable = "one_vmm_exec",\n'
    '#    arguments  = "-t 15 -r 0 kvm",\n'
    '#    default    = "vmm_exec/vmm_exec_kvm.conf",\n'
    '#    type       = "kvm" ]\n'
)
ONED_3X_KVM = ONED_3X.replace(
    IM_3X_EXAMPLE, IM_3X_EXAMPLE + IM_3X_EXAMPLE.replace("#", "")
).replace(VM_3X_EXAMPLE, VM_3X_EXAMPLE + VM_3X_EXAMPLE.replace("#", ""))
KVM_VM_MAD = {
    "name": "VM_MAD",
    "match": {"NAME": "kvm"},
    "attributes": {
        "SUNSTONE_NAME": "KVM",
        "EXECUTABLE": "one_vmm_exec",
        "ARGUMENTS": "-t 15 -r 0 kvm -p",
        "DEFAULT": "vmm_exec/vmm_exec_kvm.conf",
        "TYPE": "kvm",
        "KEEP_SNAPSHOTS": "yes",
    },
}
KVM_IM_MAD = {
    "name": "IM_MAD",
    "match": {"NAME": "kvm"},
    "attributes": {
        "SUNSTONE_NAME": "KVM",
        "EXECUTABLE": "one_im_ssh",
        "ARGUMENTS": "-r 3 -t 15 -w 90 kvm",
        "THREADS": 0,
    },
}


def edit(text, settings=None, sections=None, fmt="one"):
    """edit_config, asserting that a second run changes nothing."""
    after, keys = conf.edit_config(text, fmt, settings, sections)
    again, keys_again = conf.edit_config(after, fmt, settings, sections)
    assert (again, keys_again) == (after, []), "the edit is not idempotent"
    return after, keys


def only_change(before, after):
    """The one region that changed: (offset, removed text, added text).

    Everything before the offset and after the removed text is byte-identical in both.
    """
    assert before != after, "nothing changed"
    prefix = 0
    limit = min(len(before), len(after))
    while prefix < limit and before[prefix] == after[prefix]:
        prefix += 1
    suffix = 0
    while (
        suffix < limit - prefix
        and before[len(before) - 1 - suffix] == after[len(after) - 1 - suffix]
    ):
        suffix += 1
    return prefix, before[prefix : len(before) - suffix], after[prefix : len(after) - suffix]


def section_text(text, name, **match):
    """Source text of the one section called name whose values include match."""
    found = [
        a
        for a in conf.parse_one(text)
        if a["name"].upper() == name and conf._matches(a, match) and a["kind"] == "vector"
    ]
    assert len(found) == 1
    return text[found[0]["start"] : found[0]["end"]]


# --- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "settings"),
    [
        ("PORT = 2633\n", {"PORT": "2633"}),
        ('PORT = "2633"\n', {"PORT": "2633"}),
        ("SCRIPTS_REMOTE_DIR=/var/tmp/one\n", {"SCRIPTS_REMOTE_DIR": "/var/tmp/one"}),
        ('a = "x"   # trailing comment\n', {"A": "x"}),
        ('A = "has # inside"\n', {"A": "has # inside"}),
        ('A = "say \\"hi\\""\n', {"A": 'say "hi"'}),
        ('A = "two\n  lines"\n', {"A": "two\n  lines"}),
        ('A = ""\n', {"A": ""}),
        ("A =\nB = 1\n", {"A": "", "B": "1"}),
        ("A = 1\n#A = 2\nA = 3", {"A": ["1", "3"]}),
        ('A = "C:\\path"\n', {"A": "C:\\path"}),
        ("", {}),
        ("# only a comment", {}),
    ],
)
def test_parse_single_attributes(text, settings):
    assert conf.read_values(text) == {"settings": settings, "sections": {}}


def test_parse_vectors():
    text = (
        'DB = [ backend = "sqlite" ]\n'
        "VM_MAD = [\n"
        '    NAME = "kvm",   # the driver\n'
        '    # DEFAULT = "commented",\n'
        '    ARGUMENTS = "-t 15 # not a comment",\n'
        "    THREADS = 0 ,\n"
        '    RAW = "multi\n'
        'line" ]\n'
        "EMPTY = [ ]\n"
        'DUP = [ K = "first", k = "second" ]\n'
        'DB = [ BACKEND = "mysql" ]\n'
    )
    assert conf.read_values(text)["sections"] == {
        "DB": [{"BACKEND": "sqlite"}, {"BACKEND": "mysql"}],
        "VM_MAD": [
            {
                "NAME": "kvm",
                "ARGUMENTS": "-t 15 # not a comment",
                "THREADS": "0",
                "RAW": "multi\nline",
            }
        ],
        "EMPTY": [{}],
        "DUP": [{"K": "first"}],
    }


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("ONED_3X", {"IM_MAD": 2, "VM_MAD": 2, "VM_HOOK": 1, "DB": 1}),
        ("ONED", {"IM_MAD": 1, "VM_MAD": 3, "DB": 1, "FEDERATION": 1}),
        ("MONITORD", {"IM_MAD": 2, "LOG": 1, "NETWORK": 1}),
        ("VMM_KVM", {"OS": 1, "FEATURES": 1, "DISK": 1, "NIC": 1, "CPU_MODEL": 1}),
    ],
)
def test_fixtures_parse(name, values):
    sections = conf.read_values(globals()[name])["sections"]
    for section, count in values.items():
        assert len(sections[section]) == count


def test_fixture_values():
    values = conf.read_values(ONED_3X)
    assert [s["NAME"] for s in values["sections"]["VM_MAD"]] == ["vmm_xen", "vmm_vmware"]
    assert values["sections"]["VM_HOOK"][0]["ARGUMENTS"] == "VM #$VMID failed"
    assert values["settings"]["DEBUG_LEVEL"] == "3"
    values = conf.read_values(ONED)
    assert values["settings"]["VM_ADMIN_OPERATIONS"] == (
        "migrate, delete, recover, retry, deploy, resched,\n    backup, restore"
    )
    assert values["settings"]["VM_RESTRICTED_ATTR"] == ["CONTEXT/FILES", "NIC/MAC", "EMULATOR"]
    assert values["sections"]["FEDERATION"][0]["MASTER_ONED"] == ""
    values = conf.read_values(VMM_KVM)
    assert "<!-- #1: spinlocks -->" in values["settings"]["HYPERV_OPTIONS"]
    assert values["sections"]["NIC"] == [{"MODEL": "virtio"}]
    assert values["sections"]["DISK"] == [{"DRIVER": "raw", "CACHE": "default"}]


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ('A = 1\nVM_MAD = [\n  NAME = "kvm",\n', 2, "not closed"),
        ('A = 1\n\nB = "open\nC = 2\n', 3, "not closed"),
        ('VM_MAD = [ NAME = "kvm", ]\n', 1, "trailing comma"),
        ('A = 1\nVM_MAD = [\n  NAME = "kvm"\n  TYPE = "kvm" ]\n', 4, "expected ',' or ']'"),
        ('V = [ A = [ B = "1" ] ]\n', 1, "vector inside a vector"),
        ("A 1\n", 1, "expected '='"),
        ("A\n= 1\n", 1, "expected '='"),
        ("A = 1 B = 2\n", 1, "one attribute per line"),
        ("A = # comment\n", 1, "comment where the value"),
        ("A = <![CDATA[x]]>\n", 1, "']]>'"),
        ('A = ab"c\n', 1, "inside an unquoted value"),
        ("V = [\n  A =\n]\n", 2, "has no value"),
        ("A = 1\n]\n", 2, "expected an attribute name"),
        ("A = 1\n-B = 2\n", 2, "expected an attribute name"),
        ("A =", 1, "no value"),
    ],
)
def test_parse_errors_name_the_line(text, line, reason):
    with pytest.raises(conf.ConfError, match=reason) as info:
        conf.parse_one(text)
    assert info.value.line == line
    assert str(info.value).startswith(f"line {line}: ")


def test_find_examples_skips_comments_inside_active_sections():
    attrs = conf.parse_one(ONED)
    # '# DEFAULT = ...' inside the lxc VM_MAD is not an example of a top-level DEFAULT.
    assert conf.find_examples(ONED, "DEFAULT", "single", attrs) == []
    examples = conf.find_examples(ONED_3X, "VM_MAD", "vector", conf.parse_one(ONED_3X))
    assert [conf._section_values(e["attr"])["NAME"] for e in examples] == ["vmm_kvm"]


# --- writing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("kvm", '"kvm"'),
        ("", '""'),
        ('say "hi"', '"say \\"hi\\""'),
        ("a # b", '"a # b"'),
        ("two\nlines", '"two\nlines"'),
        ("C:\\path", '"C:\\path"'),
    ],
)
def test_quote_one_round_trips(value, text):
    assert conf.quote_one(value) == text
    assert conf.read_values(f"A = {text}\n")["settings"]["A"] == value


@pytest.mark.parametrize(
    ("value", "reason"),
    [("ends\\", "backslash"), ('a\\"b', "backslash before a quote"), ("x]]>", "']]>'")],
)
def test_quote_one_refuses(value, reason):
    with pytest.raises(conf.ConfError, match=reason):
        conf.quote_one(value)


@pytest.mark.parametrize(
    ("settings", "sections", "fmt", "reason"),
    [
        ({"bad key": "1"}, None, "one", "invalid name"),
        ({"KEEP": True}, None, "one", "booleans"),
        ({"A": ["x"]}, None, "one", "string or a number"),
        ({"A": "1", "a": "2"}, None, "one", "twice"),
        ({"1A": "x"}, None, "shell", "invalid name"),
        (None, [{"name": "OS"}], "shell", "only in format one"),
        (None, [{"name": "VM MAD"}], "one", "invalid section name"),
        (None, [{"name": "OS", "match": {"A": None}}], "one", "has no value"),
        (None, [{"name": "OS", "bogus": 1}], "one", "unknown section option"),
        (None, [{"name": "OS", "state": "absent", "attributes": {"A": "1"}}], "one", "absent"),
        (
            None,
            [{"name": "VM_MAD", "match": {"NAME": "kvm"}, "attributes": {"name": "qemu"}}],
            "one",
            "in match and",
        ),
        (None, [{"name": "OS", "attributes": {"A": "x]]>"}}], "one", "']]>'"),
    ],
)
def test_invalid_requests(settings, sections, fmt, reason):
    with pytest.raises(conf.ConfError, match=reason):
        conf.edit_config("", fmt, settings, sections)


# --- oned.conf, OpenNebula 3.x --------------------------------------------------------------


def test_enable_kvm_drivers_3x():
    after, keys = edit(ONED_3X, sections=KVM_3X)
    assert keys == ["IM_MAD[name=im_kvm]", "VM_MAD[name=vmm_kvm]"]
    assert after == ONED_3X_KVM
    # Each section goes right after its commented-out example, which stays a comment; the new
    # section takes the example's layout and its lower-case keys.
    assert IM_3X_EXAMPLE + IM_3X_EXAMPLE.replace("#", "") in after
    assert VM_3X_EXAMPLE + VM_3X_EXAMPLE.replace("#", "") + "#-----" in after
    # Nothing else moved: removing the two inserted blocks gives the original back.
    assert after.replace(IM_3X_EXAMPLE.replace("#", ""), "").replace(
        VM_3X_EXAMPLE.replace("#", ""), ""
    ) == (ONED_3X)
    values = conf.read_values(after)["sections"]
    assert [s["NAME"] for s in values["VM_MAD"]] == ["vmm_kvm", "vmm_xen", "vmm_vmware"]
    assert values["IM_MAD"][0] == {
        "NAME": "im_kvm",
        "EXECUTABLE": "one_im_ssh",
        "ARGUMENTS": "-r 0 -t 15 kvm",
    }


def test_match_and_keys_are_case_insensitive():
    upper = [dict(s, match={"NAME": s["match"]["name"]}) for s in KVM_3X]
    upper[1] = dict(upper[1], attributes={k.upper(): v for k, v in KVM_3X[1]["attributes"].items()})
    once, _ = edit(ONED_3X, sections=KVM_3X)
    assert conf.edit_config(once, "one", None, upper) == (once, [])
    assert "    name       = " in section_text(once, "VM_MAD", NAME="vmm_kvm")


def test_insert_after_last_or_at_the_end():
    spec = dict(KVM_3X[1], insert="after_last")
    after, _ = edit(ONED_3X, sections=[spec])
    _, removed, added = only_change(ONED_3X, after)
    assert removed == ""
    vmware_end = ONED_3X.index('type       = "vmware" ]\n') + len('type       = "vmware" ]\n')
    assert after.index(added) == vmware_end
    assert added.startswith("VM_MAD = [\n    name       = ")
    at_end, _ = edit(ONED_3X, sections=[dict(spec, insert="end")])
    assert at_end.startswith(ONED_3X)
    assert at_end[len(ONED_3X) :].startswith("VM_MAD = [\n")


def test_edit_inside_a_section_changes_only_its_value():
    spec = {"name": "VM_MAD", "match": {"name": "vmm_xen"}, "attributes": {"ARGUMENTS": "-t 30"}}
    after, keys = edit(ONED_3X, sections=[spec])
    assert keys == ["VM_MAD[name=vmm_xen]"]
    _, removed, added = only_change(ONED_3X, after)
    assert (removed, added) == ("15 -r 0 xen", "30")
    # The trailing comment of the edited line is kept.
    assert '    arguments  = "-t 30",   # retries, threads\n' in after


def test_values_compare_not_text():
    text = 'IM_MAD = [ NAME = kvm, THREADS = "0" ]\nPORT = "2633"\n'
    settings = {"PORT": 2633}
    sections = [{"name": "im_mad", "match": {"name": "kvm"}, "attributes": {"threads": 0}}]
    assert conf.edit_config(text, "one", settings, sections) == (text, [])


def test_absent_comments_out_and_is_idempotent():
    spec = {"name": "VM_MAD", "match": {"name": "vmm_xen"}, "state": "absent"}
    after, keys = edit(ONED_3X, sections=[spec])
    assert keys == ["VM_MAD[name=vmm_xen]"]
    xen = section_text(ONED_3X, "VM_MAD", NAME="vmm_xen")
    commented = "\n".join("#" + line for line in xen.split("\n"))
    _, removed, added = only_change(ONED_3X, after)
    assert removed.replace("\n", "\n#") == added[1:]
    assert commented in after
    # Enabling it again adds a section after the (new) commented example, which stays.
    enabled, _ = edit(after, sections=[dict(spec, state="present", attributes={"type": "xen"})])
    new = 'VM_MAD = [\n    name = "vmm_xen",\n    type = "xen" ]\n'
    assert commented + "\n" + new + "#-----" in enabled
    # Absent with nothing matching changes nothing.
    assert conf.edit_config(ONED_3X, "one", None, [dict(spec, match={"name": "x"})]) == (
        ONED_3X,
        [],
    )


def test_ambiguous_sections_are_refused():
    with pytest.raises(conf.ConfError, match=r"matches 2 sections \(lines 49, 58\)"):
        conf.edit_config(ONED_3X, "one", None, [{"name": "IM_MAD", "attributes": {"a": "b"}}])
    with pytest.raises(conf.ConfError, match="appears 2 times"):
        conf.edit_config(ONED_3X, "one", None, [{"name": "VM_MAD", "state": "absent"}])
    two = {"name": "VM_MAD", "match": {"executable": "one_vmm_exec"}, "attributes": {"a": "b"}}
    # Only the xen driver runs one_vmm_exec, until the kvm one is added.
    assert conf.edit_config(ONED_3X, "one", None, [two])[1] == ["VM_MAD[executable=one_vmm_exec]"]
    enabled, _ = edit(ONED_3X, sections=KVM_3X)
    with pytest.raises(conf.ConfError, match="matches 2 sections") as info:
        conf.edit_config(enabled, "one", None, [two])
    assert info.value.line is not None


def test_exclusive_3x_style_closing_bracket():
    spec = {
        "name": "VM_MAD",
        "match": {"name": "vmm_xen"},
        "attributes": {"executable": "one_vmm_exec", "arguments": "-t 15 -r 0 xen"},
        "exclusive": True,
    }
    after, _ = edit(ONED_3X, sections=[spec])
    # "default" goes with its line; "type" was last: the comma before it goes, and its line
    # keeps the "]" so that the comment of the line above is not lost.
    assert section_text(after, "VM_MAD", NAME="vmm_xen") == (
        "VM_MAD = [\n"
        '    name       = "vmm_xen",\n'
        '    executable = "one_vmm_exec",\n'
        '    arguments  = "-t 15 -r 0 xen"   # retries, threads\n'
        " ]"
    )
    only_change(ONED_3X, after)
    without_comment = ONED_3X.replace("   # retries, threads", "")
    after, _ = edit(without_comment, sections=[spec])
    assert section_text(after, "VM_MAD", NAME="vmm_xen").endswith(
        '    arguments  = "-t 15 -r 0 xen" ]'
    )


# --- oned.conf and monitord.conf, current versions ------------------------------------------


def test_current_oned_kvm_vm_mad_already_enabled():
    assert conf.edit_config(ONED, "one", None, [KVM_VM_MAD]) == (ONED, [])


def test_current_oned_new_key_and_changed_value():
    attributes = dict(KVM_VM_MAD["attributes"], ARGUMENTS="-t 15 -r 0 kvm", COLD_NIC_ATTACH="yes")
    after, keys = edit(ONED, sections=[dict(KVM_VM_MAD, attributes=attributes)])
    assert keys == ["VM_MAD[NAME=kvm]"]
    before_section = section_text(ONED, "VM_MAD", NAME="kvm")
    start = ONED.index(before_section)
    assert after[:start] == ONED[:start]
    assert after.endswith(ONED[start + len(before_section) :])
    assert section_text(after, "VM_MAD", NAME="kvm") == (
        "VM_MAD = [\n"
        '    NAME           = "kvm",\n'
        '    SUNSTONE_NAME  = "KVM",\n'
        '    EXECUTABLE     = "one_vmm_exec",\n'
        '    ARGUMENTS      = "-t 15 -r 0 kvm",\n'
        '    DEFAULT        = "vmm_exec/vmm_exec_kvm.conf",\n'
        '    TYPE           = "kvm",\n'
        '    KEEP_SNAPSHOTS = "yes",\n'
        '    LIVE_RESIZE    = "yes",\n'
        '    SUPPORT_SHAREABLE    = "yes",\n'
        '    COLD_NIC_ATTACH = "yes"\n'
        "]"
    )


@pytest.mark.parametrize(
    ("name", "attributes", "expected"),
    [
        # Removal of a middle key, a last key ("]" on its own line), the first key.
        (
            "LOG",
            {"SYSTEM": None},
            "LOG = [\n  DEBUG_LEVEL = 3\n]",
        ),
        (
            "LOG",
            {"DEBUG_LEVEL": None},
            'LOG = [\n  SYSTEM      = "file"\n]',
        ),
        (
            "VNC_PORTS",
            {"RESERVED": None, "START": "5900"},
            'VNC_PORTS = [\n    START    = 5900\n    # RESERVED = "6800, 6801, 9869"\n]',
        ),
        (
            "VNC_PORTS",
            {"EXTRA": "1"},
            'VNC_PORTS = [\n    START    = 5900,\n    RESERVED = "32768:65536",\n'
            '    EXTRA    = "1"\n    # RESERVED = "6800, 6801, 9869"\n]',
        ),
        # The first pair shares the line of "[", the second is aligned under it.
        (
            "DB",
            {"BACKEND": None},
            "DB = [ TIMEOUT = 2500 ]",
        ),
        (
            "DB",
            {"SERVER": "localhost"},
            'DB = [ BACKEND = "sqlite",\n       TIMEOUT = 2500,\n       SERVER  = "localhost" ]',
        ),
        (
            "HM_MAD",
            {"ARGUMENTS": None},
            'HM_MAD = [\n    EXECUTABLE = "one_hm"]',
        ),
        (
            "HM_MAD",
            {"X": "y"},
            'HM_MAD = [\n    EXECUTABLE = "one_hm",\n'
            '    ARGUMENTS = "-p 2101 -l 2102 -b 127.0.0.1",\n    X = "y"]',
        ),
    ],
)
def test_section_layouts(name, attributes, expected):
    after, _ = edit(ONED, sections=[{"name": name, "attributes": attributes}])
    assert section_text(after, name) == expected
    only_change(ONED, after)


def test_exclusive_current_style():
    spec = {"name": "VM_MAD", "match": {"NAME": "qemu"}, "exclusive": True}
    spec["attributes"] = {"EXECUTABLE": "one_vmm_exec", "TYPE": "qemu"}
    after, keys = edit(ONED, sections=[spec])
    assert keys == ["VM_MAD[NAME=qemu]"]
    assert section_text(after, "VM_MAD", NAME="qemu") == (
        'VM_MAD = [\n    NAME           = "qemu",\n    EXECUTABLE     = "one_vmm_exec",\n'
        '    TYPE           = "qemu"\n]'
    )
    only_change(ONED, after)


def test_removing_the_last_key_is_refused():
    with pytest.raises(conf.ConfError, match="would leave VXLAN empty"):
        conf.edit_config(
            "VXLAN = [ START = 2 ]\n",
            "one",
            None,
            [{"name": "VXLAN", "attributes": {"START": None}}],
        )


def test_monitord_enable_kvm_im_mad():
    after, keys = edit(MONITORD, sections=[KVM_IM_MAD])
    assert keys == ["IM_MAD[NAME=kvm]"]
    _, removed, added = only_change(MONITORD, after)
    assert removed == ""
    assert added == (
        "IM_MAD = [\n"
        '    NAME          = "kvm",\n'
        '    SUNSTONE_NAME = "KVM",\n'
        '    EXECUTABLE    = "one_im_ssh",\n'
        '    ARGUMENTS     = "-r 3 -t 15 -w 90 kvm",\n'
        '    THREADS       = "0"\n'
        "]\n"
    )
    # Right after the commented-out example, before the blank line that follows it.
    assert after.index(added) == MONITORD.index("#]\n") + len("#]\n")
    names = [s["NAME"] for s in conf.read_values(after)["sections"]["IM_MAD"]]
    assert names == ["kvm", "qemu", "lxc"]


def test_monitord_new_key_follows_the_section_case():
    spec = {"name": "LOG", "attributes": {"SYSTEM": "syslog", "FACILITY": "local0"}}
    after, _ = edit(MONITORD, sections=[spec])
    assert section_text(after, "LOG") == (
        'LOG = [\n  system      = "syslog",\n  debug_level = 3,\n  facility    = "local0"\n]'
    )


def test_settings_in_oned():
    after, keys = edit(ONED, {"PORT": 2634, "MANAGER_TIMER": 20, "MAC_PREFIX": "02:00"})
    assert keys == ["PORT", "MANAGER_TIMER"]
    assert '\nPORT = "2634"\n' in after
    assert '#MANAGER_TIMER = 15\nMANAGER_TIMER = "20"\n' in after
    new, _ = edit(ONED, {"GRPC_PORT": 2634})
    assert new == ONED + 'GRPC_PORT = "2634"\n'
    commented, keys = edit(ONED, {"VM_ADMIN_OPERATIONS": None})
    assert keys == ["VM_ADMIN_OPERATIONS"]
    assert '#VM_ADMIN_OPERATIONS  = "migrate, delete' in commented
    assert '\n#    backup, restore"\n' in commented
    assert "VM_ADMIN_OPERATIONS" not in conf.read_values(commented)["settings"]


def test_settings_refuse_lists_and_vectors():
    with pytest.raises(conf.ConfError, match="set 3 times") as info:
        conf.edit_config(ONED, "one", {"VM_RESTRICTED_ATTR": "NIC/MAC"})
    assert info.value.line == ONED.splitlines().index('VM_RESTRICTED_ATTR = "NIC/MAC"') + 1
    with pytest.raises(conf.ConfError, match="VM_MAD is a vector attribute"):
        conf.edit_config(ONED, "one", {"VM_MAD": "kvm"})
    with pytest.raises(conf.ConfError, match="PORT is a single attribute"):
        conf.edit_config(ONED, "one", None, [{"name": "PORT", "attributes": {"A": "1"}}])
    # Commenting out every occurrence of a repeated attribute is not ambiguous.
    after, _ = edit(ONED, {"VM_RESTRICTED_ATTR": None})
    assert "VM_RESTRICTED_ATTR" not in conf.read_values(after)["settings"]


# --- vmm_exec_kvm.conf ----------------------------------------------------------------------


def test_vmm_exec_kvm_defaults():
    settings = {"EMULATOR": "/usr/bin/qemu-kvm-one", "CPU": 1}
    sections = [
        {"name": "OS", "attributes": {"ARCH": "x86_64", "BOOT": "hd"}},
        {"name": "FEATURES", "attributes": {"ACPI": "yes", "PAE": "no"}},
        {"name": "DISK", "attributes": {"DRIVER": "raw", "CACHE": "none"}},
        {"name": "NIC", "attributes": {"MODEL": "virtio", "FILTER": "clean-traffic"}},
        {"name": "CPU_MODEL", "attributes": {"MODEL": "host-model"}},
    ]
    after, keys = edit(VMM_KVM, settings, sections)
    assert keys == ["EMULATOR", "OS", "DISK", "NIC", "CPU_MODEL"]
    assert '#EMULATOR = /usr/libexec/qemu-kvm\nEMULATOR = "/usr/bin/qemu-kvm-one"\n' in after
    assert 'OS       = [ ARCH = "x86_64", MACHINE = "q35", BOOT = "hd" ]\n' in after
    assert 'DISK     = [ driver = "raw" , cache = "none"]\n' in after
    assert 'NIC = [\n    MODEL = "virtio",\n    FILTER = "clean-traffic"\n' in after
    assert 'CPU_MODEL = [ MODEL = "host-model" ]\n' in after
    # The multi-line strings, with a '#' inside, are untouched.
    start = VMM_KVM.index("# Raw XML")
    assert after.endswith(VMM_KVM[start:])


def test_multiline_string_value():
    spice = "\n    <video>\n        <model type='qxl'/>\n    </video>"
    after, keys = edit(VMM_KVM, {"SPICE_OPTIONS": spice})
    assert keys == ["SPICE_OPTIONS"]
    assert after.endswith(f'SPICE_OPTIONS = "{spice}"\n')
    assert conf.read_values(after)["settings"]["SPICE_OPTIONS"] == spice
    _, removed, added = only_change(VMM_KVM, after)
    assert (removed, added) == ("vga' heads='1", "qxl")


# --- kvmrc ----------------------------------------------------------------------------------


def test_kvmrc_values():
    settings = conf.read_values(KVMRC, "shell")["settings"]
    assert settings["QEMU_PROTOCOL"] == "qemu+ssh"
    assert settings["VIRTIOFSD_BINARY_PATH"] == "/usr/libexec/virtiofsd /usr/lib/qemu/virtiofsd"
    assert settings["OVMF_NVRAM"] == "/usr/share/OVMF/OVMF_VARS.fd"
    assert "MIGRATE_OPTIONS" not in settings


def test_kvmrc_edits():
    settings = {
        "QEMU_PROTOCOL": "qemu+tcp",
        "MIGRATE_OPTIONS": "--unsafe --compressed",
        "SHUTDOWN_TIMEOUT": 180,
        "VIRTIOFSD_BINARY_PATH": "/usr/libexec/virtiofsd /usr/lib/qemu/virtiofsd",
        "LANG": None,
        "NEW_ONE": "$HOME",
    }
    after, keys = edit(KVMRC, settings, fmt="shell")
    assert keys == ["QEMU_PROTOCOL", "MIGRATE_OPTIONS", "LANG", "NEW_ONE"]
    # export and bare style kept, quoted when needed, after the commented example.
    assert "\nexport QEMU_PROTOCOL=qemu+tcp\n" in after
    assert '#export MIGRATE_OPTIONS=--unsafe\nexport MIGRATE_OPTIONS="--unsafe --compressed"\n' in (
        after
    )
    assert "\n#export LANG=C\n" in after
    assert after.endswith('export NEW_ONE="\\$HOME"\n')
    values = conf.read_values(after, "shell")["settings"]
    assert values["NEW_ONE"] == "$HOME"
    assert "LANG" not in values


def test_kvmrc_single_quoted_and_commented_values():
    after, _ = edit(KVMRC, {"OVMF_NVRAM": "/x y", "VIRTIOFSD_BINARY_PATH": "/a"}, fmt="shell")
    assert '\nOVMF_NVRAM="/x y"\n' in after
    assert '\nVIRTIOFSD_BINARY_PATH="/a"   # first found\n' in after


def test_shell_expansion_is_replaced_by_a_literal():
    text = 'export A="$B"\n'
    after, keys = edit(text, {"A": "$B"}, fmt="shell")
    assert (after, keys) == ('export A="\\$B"\n', ["A"])


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("export A=1\nif true; then\n", 2, "not a shell assignment"),
        ("A=1\nB=1 C=2\n", 2, "one assignment per line"),
        ('A=1\n\nB="open\n', 3, "not closed"),
        ("A=$(ls -l)\n", 1, "unsupported shell syntax"),
        ("export A\n", 1, "not a shell assignment"),
    ],
)
def test_shell_errors_name_the_line(text, line, reason):
    with pytest.raises(conf.ConfError, match=reason) as info:
        conf.edit_config(text, "shell", {"A": "x"})
    assert info.value.line == line


# --- the module source ----------------------------------------------------------------------


def test_module_source_parses_as_python_3_6():
    ast.parse((LIBRARY / "one_frontend_conf.py").read_text(), feature_version=(3, 6))


def test_argument_spec_matches_the_documentation():
    options = yaml.safe_load(conf.DOCUMENTATION)["options"]
    assert set(options["sections"]["suboptions"]) == set(conf.SECTION_SPEC)
    for name, spec in conf.SECTION_SPEC.items():
        assert options["sections"]["suboptions"][name].get("default") == spec.get("default")


# --- end to end through Ansible -------------------------------------------------------------


@pytest.mark.ansible
def test_ansible_end_to_end_on_oned_3x(tmp_path):
    target = tmp_path / "etc" / "oned.conf"
    target.parent.mkdir()
    target.write_text(ONED_3X)
    target.chmod(0o640)
    args = {"path": str(target), "sections": KVM_3X}
    checked, applied, again = check_apply_again(
        tmp_path, "one_frontend_conf", args, target, ONED_3X_KVM, library=LIBRARY
    )
    assert checked["keys_changed"] == ["IM_MAD[name=im_kvm]", "VM_MAD[name=vmm_kvm]"]
    for result in (checked, applied, again):
        names = [s["NAME"] for s in result["values"]["sections"]["VM_MAD"]]
        assert names == ["vmm_kvm", "vmm_xen", "vmm_vmware"]


@pytest.mark.ansible
def test_ansible_query_kvmrc_and_refusals(tmp_path):
    kvmrc = tmp_path / "kvmrc"
    kvmrc.write_text(KVMRC)
    queried = run_ansible(
        tmp_path,
        "one_frontend_conf",
        {"path": str(kvmrc), "format": "shell", "query": True},
        library=LIBRARY,
    )
    assert queried["changed"] is False
    assert queried["values"]["settings"]["QEMU_PROTOCOL"] == "qemu+ssh"
    assert queried["values"]["sections"] == {}

    args = {"path": str(kvmrc), "format": "shell", "settings": {"QEMU_PROTOCOL": "qemu+tcp"}}
    applied = run_ansible(tmp_path, "one_frontend_conf", dict(args, backup=False), library=LIBRARY)
    assert applied["changed"] is True
    assert "backup_file" not in applied
    assert applied["values"]["settings"]["QEMU_PROTOCOL"] == "qemu+tcp"
    assert "export QEMU_PROTOCOL=qemu+tcp\n" in kvmrc.read_text()

    broken = tmp_path / "oned.conf"
    broken.write_text(
        ONED.replace('    TYPE           = "qemu",\n', '    TYPE           = "qemu"\n')
    )
    failed = run_ansible(
        tmp_path,
        "one_frontend_conf",
        {"path": str(broken), "sections": [KVM_VM_MAD]},
        library=LIBRARY,
    )
    assert failed.get("failed") is True
    line = broken.read_text().splitlines().index('    KEEP_SNAPSHOTS = "yes"', 60) + 1
    assert failed["line"] == line
    assert f"line {line}: VM_MAD: expected ',' or ']' after TYPE" in failed["msg"]

    both = run_ansible(
        tmp_path,
        "one_frontend_conf",
        {"path": str(kvmrc), "format": "shell", "query": True, "settings": {"A": "1"}},
        library=LIBRARY,
    )
    assert both.get("failed") is True
    assert "query changes nothing" in both["msg"]

    bad_option = run_ansible(
        tmp_path,
        "one_frontend_conf",
        {"path": str(broken), "sections": [{"name": "OS", "state": "gone"}]},
        library=LIBRARY,
    )
    assert bad_option.get("failed") is True


def test_change_sentences_name_sections_and_values_never_a_secret():
    before = 'EMULATOR = "/usr/bin/kvm"\nONE_KEY = "old-s3cret"\n'
    after, keys = conf.edit_config(
        before, "one", {"EMULATOR": "/usr/bin/qemu-kvm-one", "ONE_KEY": "n3w", "PORT": 2633}
    )
    lines = conf.change_sentences(
        "/etc/one/oned.conf", conf.read_values(before), conf.read_values(after), keys
    )
    assert [line["text"] for line in lines] == [
        'oned.conf: EMULATOR "/usr/bin/kvm" -> "/usr/bin/qemu-kvm-one"',
        "oned.conf: ONE_KEY changed",
        'oned.conf: PORT not set -> "2633"',
    ]
    after, keys = edit(ONED_3X, sections=KVM_3X)
    lines = conf.change_sentences("/etc/one/oned.conf", conf.read_values(ONED_3X), {}, keys)
    assert [line["text"] for line in lines] == [
        "oned.conf: IM_MAD[name=im_kvm] set",
        "oned.conf: VM_MAD[name=vmm_kvm] set",
    ]
