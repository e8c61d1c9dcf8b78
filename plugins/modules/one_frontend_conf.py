#!/usr/bin/python
"""one_frontend_conf: structural editor for OpenNebula configuration files and kvmrc."""

# Ansible module conventions: the documentation strings come before the imports, and os.path is
# used throughout (the code runs on the front-end's python3 >= 3.6, standard library only).
DOCUMENTATION = r"""
---
module: one_frontend_conf
short_description: Edit OpenNebula configuration files and kvmrc structurally
description:
  - Parses a file in OpenNebula's attribute syntax (C(format=one) for C(/etc/one/oned.conf),
    C(/etc/one/monitord.conf), C(/etc/one/vmm_exec/vmm_exec_kvm.conf)) or a shell fragment made of
    assignments (C(format=shell) for the KVM driver's C(kvmrc)), and changes only the attributes
    asked for. Every byte outside the edited lines or sections stays identical (comments, blank
    lines, the other drivers, key order and spelling).
  - "C(one) syntax: single attributes C(NAME = value) (a value is double-quoted, possibly over
    several lines, or bare), vector attributes C(NAME = [ KEY = value, ... ]) over one or several
    lines, possibly repeated (C(VM_MAD), C(IM_MAD)), and C(#) comments (whole-line, trailing, and
    between the attributes of a vector). Names are case-insensitive, as OpenNebula upper-cases
    them: C(name) matches C(NAME)."
  - Values are compared, not text (C(THREADS = 0) equals C(THREADS = "0")). A changed value is
    written double-quoted in C(one) format; an existing key keeps its spelling and place, a new key
    follows the case of the section's keys (lower-case in OpenNebula 3.x files, upper-case today).
  - A file the module cannot parse is refused, with the line and the reason, rather than guessed
    at. So are a few valid but unusual layouts (see the notes).
  - One call edits one file, producing one diff and at most one backup. The result is parsed again
    and checked against the request before anything is written.
  - The file is written atomically (temporary file in the same directory, then rename), keeping the
    original file's mode and owner; I(mode), I(owner) and I(group) are applied afterwards.
version_added: "0.1.0"
author:
  - kvmprep maintainers (!UNKNOWN)
options:
  path:
    description: Path of the file to edit. It must exist.
    type: path
    required: true
  format:
    description:
      - C(one) for OpenNebula's attribute syntax, C(shell) for C(kvmrc).
    type: str
    choices: [one, shell]
    default: one
  settings:
    description:
      - Single attributes (C(one)) or shell variables (C(shell)) to set, as a mapping of name to
        value. A value is a string or a number; booleans are refused (write C("yes")/C("no"), as
        OpenNebula does).
      - "C(one): a name set in the file exactly once is changed in place. A name that is absent
        is inserted after the last commented-out example of it (C(#EMULATOR = ...)), else at the
        end of the file. A name the file sets several times (C(VM_RESTRICTED_ATTR)) is refused:
        it is a list, not a setting."
      - "C(shell): every assignment of the variable is changed in place (C(export) and trailing
        comments are kept; a bare value stays bare when it needs no quoting). A missing variable
        is inserted after its commented-out example, else at the end of the file, with C(export)
        unless the file's assignments never use it."
      - A value of C(null) means the name must not be set; its assignments are commented out by
        prefixing their lines with C(#).
    type: dict
    default: {}
  sections:
    description:
      - Vector attributes to edit (C(format=one) only), applied in order.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Name of the vector attribute, for example C(VM_MAD).
        type: str
        required: true
      match:
        description:
          - Attributes selecting which of the sections called I(name) is meant, for example
            C(NAME=kvm). Keys are case-insensitive, values compared exactly.
          - Omitted, the file must hold at most one section called I(name).
          - Several sections matching is an error (add keys to I(match)).
        type: dict
        default: {}
      attributes:
        description:
          - Attributes the section must have, as a mapping of key to value. A value of C(null)
            removes that key from the section.
          - A new section is made of the I(match) attributes followed by these.
        type: dict
        default: {}
      state:
        description:
          - C(present) edits the matching section, or adds it when none matches.
          - C(absent) comments out the matching section(s) (every line prefixed with C(#)).
        type: str
        choices: [present, absent]
        default: present
      exclusive:
        description:
          - The section holds exactly the I(match) and I(attributes) keys; other keys are removed.
        type: bool
        default: false
      insert:
        description:
          - Where a new section goes. C(after_example) puts it right after the last commented-out
            example of it (a C(#VM_MAD = [ ... ]) block whose attributes include I(match)), the
            example staying a comment; without one, like C(after_last). C(after_last) puts it after
            the last section with the same name, without one at the end of the file. C(end) puts
            it at the end of the file.
        type: str
        choices: [after_example, after_last, end]
        default: after_example
  query:
    description:
      - Change nothing and return the parsed file in I(values). I(settings) and I(sections) must
        then be empty.
    type: bool
    default: false
  backup:
    description: Keep a timestamped copy of the original file when it is changed.
    type: bool
    default: true
notes:
  - "Refused although OpenNebula reads them: more than one attribute on a line, anything but blanks
    between a name and its C(=), a comment right after C(=) (OpenNebula reads the comment text as
    the value), a C(\") inside an unquoted value, a quoted value not closed by an unescaped C(\"),
    and any value on a line containing C(]]>) (OpenNebula 4 and later abort on it)."
  - "Values this module will not write: a value ending with a backslash or containing C(\\\")
    (OpenNebula 3.x and later versions unescape it differently), and a value containing C(]]>)."
  - An empty value is written C(""); OpenNebula 3.x reads that as two quote characters.
  - C(shell) format accepts only comments, blank lines and assignments (C(KEY=value),
    C(export KEY=value)) one per line; a file with other commands is refused.
extends_documentation_fragment:
  - files
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: linux
"""

EXAMPLES = r"""
- name: Enable the KVM drivers (OpenNebula 3.x oned.conf)
  kvmprep.kvm.one_frontend_conf:
    path: /etc/one/oned.conf
    sections:
      - name: IM_MAD
        match: {name: im_kvm}
        attributes:
          executable: one_im_ssh
          arguments: "-r 0 -t 15 kvm"
      - name: VM_MAD
        match: {name: vmm_kvm}
        attributes:
          executable: one_vmm_exec
          arguments: "-t 15 -r 0 kvm"
          default: vmm_exec/vmm_exec_kvm.conf
          type: kvm
  register: oned_conf

- name: Enable the KVM virtualization driver (current oned.conf)
  kvmprep.kvm.one_frontend_conf:
    path: /etc/one/oned.conf
    sections:
      - name: VM_MAD
        match: {NAME: kvm}
        attributes:
          SUNSTONE_NAME: KVM
          EXECUTABLE: one_vmm_exec
          ARGUMENTS: "-t 15 -r 0 kvm -p"
          DEFAULT: vmm_exec/vmm_exec_kvm.conf
          TYPE: kvm
          KEEP_SNAPSHOTS: "yes"

- name: Enable the KVM monitoring driver (current monitord.conf)
  kvmprep.kvm.one_frontend_conf:
    path: /etc/one/monitord.conf
    sections:
      - name: IM_MAD
        match: {NAME: kvm}
        attributes:
          SUNSTONE_NAME: KVM
          EXECUTABLE: one_im_ssh
          ARGUMENTS: "-r 3 -t 15 -w 90 kvm"
          THREADS: 0

- name: KVM driver defaults
  kvmprep.kvm.one_frontend_conf:
    path: /etc/one/vmm_exec/vmm_exec_kvm.conf
    settings:
      EMULATOR: /usr/bin/qemu-kvm-one
    sections:
      - {name: OS, attributes: {ARCH: x86_64}}
      - {name: FEATURES, attributes: {ACPI: "yes", PAE: "no"}}
      - {name: DISK, attributes: {DRIVER: raw, CACHE: none}}
      - {name: NIC, attributes: {MODEL: virtio}}

- name: Migration over the transport the hosts listen on
  kvmprep.kvm.one_frontend_conf:
    path: /var/lib/one/remotes/etc/vmm/kvm/kvmrc
    format: shell
    settings:
      QEMU_PROTOCOL: qemu+tcp
      MIGRATE_OPTIONS: null

- name: Read oned.conf
  kvmprep.kvm.one_frontend_conf:
    path: /etc/one/oned.conf
    query: true
  register: oned
# oned.values.settings.SCRIPTS_REMOTE_DIR, oned.values.sections.VM_MAD | map(attribute='NAME')
"""

RETURN = r"""
changed:
  description: Whether the file was (or, in check mode, would be) changed.
  returned: always
  type: bool
keys_changed:
  description: Settings and sections that were (or would be) changed, added or commented out.
  returned: always
  type: list
  elements: str
  sample: ["EMULATOR", "VM_MAD[NAME=kvm]"]
values:
  description:
    - The file's attributes after the change (as they are, with I(query) or in check mode as they
      would be). Names and section keys are upper-cased; values are strings.
    - "C(settings): single attributes (C(shell): variables, the last assignment winning); an
      attribute set several times is a list of its values."
    - "C(sections): for each vector attribute name, the list of its sections in file order, each a
      mapping of key to value (the first one when a key is repeated, as OpenNebula reads it).
      Always empty in C(shell) format."
  returned: success
  type: dict
  sample:
    settings: {PORT: "2633", SCRIPTS_REMOTE_DIR: /var/tmp/one}
    sections:
      VM_MAD: [{NAME: kvm, EXECUTABLE: one_vmm_exec, TYPE: kvm}]
backup_file:
  description: Path of the backup of the original file.
  returned: when the file was written with I(backup=true)
  type: str
  sample: /etc/one/oned.conf.12345.2024-01-01@10:00:00~
diff:
  description: Content before and after, with the file path as headers.
  returned: when something changed (Ansible shows it in diff mode)
  type: dict
line:
  description: Line of the file where parsing failed.
  returned: when the module failed on a line of the file
  type: int
path:
  description: The edited path.
  returned: always
  type: str
kvmprep_changes:
  description:
    - What changed (in check mode, would change), one sentence per attribute or section, for
      kvmprep's change report, e.g. "vmm_exec_kvm.conf - EMULATOR old -> new" with a colon for
      the dash. The value of an attribute whose name says it holds a secret is left out.
  returned: success
  type: list
  elements: dict
"""

import bisect
import os
import re
import stat
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_safepath import (
    UnsafePath,
    copy_as_backup,
    join,
    locate,
    open_file_at,
    read_fd,
    read_file,
    replace_file,
)

# The parser lives in module_utils, shared.
from ansible_collections.kvmprep.kvm.plugins.module_utils.one_frontend_syntax import (
    ConfError,
    Incomplete,
    _line_end,
    _OneParser,
    _section_values,
    parse_one,
    parse_shell,
    read_values,
    shell_word,
)

FORMATS = ("one", "shell")
STATES = ("present", "absent")
PLACEMENTS = ("after_example", "after_last", "end")
ONE_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")
SHELL_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
EXAMPLE_MAX_LINES = 200


# ---------------------------------------------------------------------------------------------
# Text helpers
# ---------------------------------------------------------------------------------------------


def _line_start(text, pos):
    return text.rfind("\n", 0, pos) + 1


def _blank(fragment):
    return not fragment.strip(" \t\r")


def _splice(text, edits):
    """Apply (start, end, replacement) edits that do not overlap."""
    for start, end, replacement in sorted(edits, key=lambda e: e[0], reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


def _text_value(value, what):
    """The string a requested value stands for (numbers as written, booleans refused)."""
    if isinstance(value, bool):
        raise ConfError(
            f"{what}: booleans are ambiguous in OpenNebula files, quote the value ('yes', 'no')"
        )
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return value
    raise ConfError(f"{what}: a value must be a string or a number, not {type(value).__name__}")


def _case_of(keys):
    """'lower' or 'upper' when all the keys with letters use that case, else None."""
    cased = [k for k in keys if k.upper() != k.lower()]
    if cased and all(k == k.lower() for k in cased):
        return "lower"
    if cased and all(k == k.upper() for k in cased):
        return "upper"
    return None


def _apply_case(key, case):
    if case == "lower":
        return key.lower()
    if case == "upper":
        return key.upper()
    return key


def find_examples(text, name, kind, attrs):
    """Commented-out attributes called name, of the given kind, outside the active attributes.

    A block is an example when its lines all start with '#' and, with the first '#' of each line
    removed, it parses as one attribute. Returns dicts with attr (parsed from the uncommented
    text), text (that uncommented text) and end (offset just past the block's last line).
    """
    head = re.compile(r"[ \t]*#+[ \t]*(" + re.escape(name) + r")[ \t]*=", re.IGNORECASE)
    spans = [(a["start"], a["end"]) for a in attrs]
    starts = [s for s, _end in spans]
    examples = []
    pos = 0
    n = len(text)
    while pos < n:
        eol = _line_end(text, pos)
        m = head.match(text, pos, eol)
        k = bisect.bisect_right(starts, pos) - 1
        if not m or (k >= 0 and spans[k][0] <= pos < spans[k][1]):
            pos = eol + 1
            continue
        first_line = text.count("\n", 0, pos) + 1
        attr, body, last_eol = _parse_commented(
            text, m.start(1), eol, lambda b, line=first_line: _OneParser(b, line).attribute(0)
        )
        rest = body[attr["end"] :].split("\n", 1)[0] if attr else ""
        if attr is None or attr["kind"] != kind or not _blank(rest.split("#", 1)[0]):
            pos = eol + 1
            continue
        examples.append({"attr": attr, "text": body, "end": min(last_eol + 1, n)})
        pos = last_eol + 1
    return examples


def _parse_commented(text, start, eol, parse):
    """Parse a commented-out block: (parse's result, uncommented text, end of its last line).

    The block starts at text[start] (after the '#') and continues, while parse raises
    Incomplete, with the next lines that start with '#', each without its first '#'. The result
    is None when the block does not parse.
    """
    comment = re.compile(r"[ \t]*#")
    body = text[start : eol + 1]
    for _line in range(EXAMPLE_MAX_LINES):
        try:
            return parse(body), body, eol
        except Incomplete:
            nxt = eol + 1
            if nxt >= len(text) or not comment.match(text, nxt):
                break
            eol = _line_end(text, nxt)
            body += re.sub(r"^[ \t]*#", "", text[nxt : eol + 1], count=1)
        except ConfError:
            break
    return None, body, eol


# ---------------------------------------------------------------------------------------------
# OpenNebula attribute syntax: writing
# ---------------------------------------------------------------------------------------------


def quote_one(value):
    """Double-quote a value for OpenNebula's parser (a quote is written \\")."""
    if value.endswith("\\"):
        raise ConfError(f"{value!r}: a value cannot end with a backslash in OpenNebula syntax")
    if '\\"' in value:
        raise ConfError(
            f"{value!r}: a backslash before a quote is read differently by OpenNebula versions"
        )
    if "]]>" in value:
        raise ConfError(f"{value!r}: ']]>' is refused by OpenNebula's parser")
    return '"' + value.replace('"', '\\"') + '"'


def _section_layout(text, attr):
    """How a vector is laid out: one line or several, indentation, '=' column, key case."""
    pairs = attr["pairs"]
    layout = {
        "multiline": not pairs or "\n" in text[attr["open"] : attr["close"]],
        "indent": "    ",
        "column": None,
        "spaced": True,
        "close_own_line": not pairs
        or _blank(text[_line_start(text, attr["close"]) : attr["close"]]),
        "case": _case_of([p["key"] for p in pairs]),
        "aligned": False,
    }
    if not pairs:
        return layout
    layout["spaced"] = any(
        ch in " \t" for p in pairs for ch in text[p["start"] + len(p["key"]) : p["value_start"]]
    )
    columns = {}
    for pair in pairs:
        start = _line_start(text, pair["start"])
        if _blank(text[start : pair["start"]]):
            layout["indent"] = text[start : pair["start"]]
        column = pair["eq"] - _line_start(text, pair["eq"])
        columns[column] = columns.get(column, 0) + 1
    if columns:
        column, count = max(columns.items(), key=lambda item: (item[1], item[0]))
        if count >= 2 and count * 2 > len(pairs):
            layout["column"] = column
    layout["aligned"] = layout["column"] is not None
    return layout


def _pair_text(key, value, layout, indent=""):
    if layout["column"] is not None and len(indent) + len(key) < layout["column"]:
        return indent + key.ljust(layout["column"] - len(indent)) + "= " + quote_one(value)
    return indent + key + (" = " if layout["spaced"] else "=") + quote_one(value)


def render_section(name, items, layout):
    """Text of a new vector attribute (items: (key, value) pairs), ending with a newline."""
    keys = [key for key, _value in items]
    if not layout["multiline"]:
        eq = " = " if layout["spaced"] else "="
        body = ", ".join(key + eq + quote_one(value) for key, value in items)
        return f"{name} = [ {body} ]\n"
    lines = []
    width = max(len(key) for key in keys)
    for key, value in items:
        if layout["aligned"]:
            lines.append(layout["indent"] + key.ljust(width) + " = " + quote_one(value))
        else:
            lines.append(_pair_text(key, value, layout, layout["indent"]))
    closing = "\n]\n" if layout["close_own_line"] else " ]\n"
    return "{} = [\n{}{}".format(name, ",\n".join(lines), closing)


def _comment_out(text, start, end, what, line):
    """Prefix with '#' every line of text[start:end], which must fill its lines."""
    first = _line_start(text, start)
    last = _line_end(text, end)
    rest = text[end:last].strip(" \t\r")
    if not _blank(text[first:start]) or (rest and not rest.startswith("#")):
        raise ConfError(f"{what} shares its lines with other text; cannot comment it out", line)
    block = text[first:last]
    return text[:first] + "\n".join("#" + part for part in block.split("\n")) + text[last:]


def _insert_lines(text, pos, block):
    """Insert block (whole lines) at pos, a line start or the end of the text."""
    if pos > 0 and text[pos - 1] != "\n":
        return text[:pos] + "\n" + block + text[pos:]
    return text[:pos] + block + text[pos:]


# ---------------------------------------------------------------------------------------------
# OpenNebula attribute syntax: edits (each one parses the current text again)
# ---------------------------------------------------------------------------------------------


def _set_single(text, name, value):
    """Apply one setting; return (text, changed)."""
    attrs = parse_one(text)
    upper = name.upper()
    same = [a for a in attrs if a["name"].upper() == upper]
    vectors = [a for a in same if a["kind"] == "vector"]
    if vectors:
        raise ConfError(
            "{} is a vector attribute ({} = [ ... ]): edit it under sections".format(
                name, vectors[0]["name"]
            ),
            vectors[0]["line"],
        )
    if value is None:
        for attr in reversed(same):
            text = _comment_out(text, attr["start"], attr["end"], attr["name"], attr["line"])
        return text, bool(same)
    if len(same) > 1:
        raise ConfError(
            "{} is set {} times (lines {}): a repeated attribute is a list, not a setting".format(
                name, len(same), ", ".join(str(a["line"]) for a in same)
            ),
            same[1]["line"],
        )
    if same:
        attr = same[0]
        if attr["value"] == value:
            return text, False
        start, end = attr["value_start"], attr["value_end"]
        prefix = " " if start == end and text[start - 1] == "=" else ""
        return text[:start] + prefix + quote_one(value) + text[end:], True
    examples = find_examples(text, name, "single", attrs)
    if examples:
        spelled = examples[-1]["attr"]["name"]
        pos = examples[-1]["end"]
    else:
        spelled = _apply_case(name, _case_of([a["name"] for a in attrs]))
        pos = len(text)
    return _insert_lines(text, pos, f"{spelled} = {quote_one(value)}\n"), True


def _matches(attr, match):
    values = _section_values(attr)
    return all(values.get(key.upper()) == value for key, value in match.items())


def _find_sections(text, spec):
    """(attrs, named, found): all attributes, the sections called name, those matching."""
    attrs = parse_one(text)
    upper = spec["name"].upper()
    named = [a for a in attrs if a["name"].upper() == upper]
    singles = [a for a in named if a["kind"] == "single"]
    if singles:
        raise ConfError(
            "{} is a single attribute, not a section: edit it under settings".format(spec["name"]),
            singles[0]["line"],
        )
    found = [a for a in named if _matches(a, spec["match"])]
    return attrs, named, found


def _describe(spec):
    if not spec["match"]:
        return spec["name"]
    inner = ",".join(f"{k}={v}" for k, v in spec["match"].items())
    return "{}[{}]".format(spec["name"], inner)


def _add_pair(text, attr, key, value):
    pairs = attr["pairs"]
    layout = _section_layout(text, attr)
    key = _apply_case(key, layout["case"])
    if not pairs:
        inside = text[attr["open"] + 1 : attr["close"]]
        if not _blank(inside):
            raise ConfError(
                "{} is empty but for comments; refusing to guess where {} goes".format(
                    attr["name"], key
                ),
                attr["line"],
            )
        return (
            text[: attr["open"] + 1]
            + " "
            + _pair_text(key, value, layout)
            + " "
            + text[attr["close"] :]
        )
    last = pairs[-1]
    end = last["value_end"]
    start = _line_start(text, last["start"])
    if layout["multiline"] and _blank(text[start : last["start"]]):
        new = _pair_text(key, value, layout, text[start : last["start"]])
        eol = _line_end(text, end)
        if text[end:eol].strip(" \t\r").startswith("#"):
            # The last value has a trailing comment: the comma goes before it, the pair below it.
            return text[:end] + "," + text[end : eol + 1] + new + "\n" + text[eol + 1 :]
        return text[:end] + ",\n" + new + text[end:]
    separator = ", "
    if len(pairs) > 1:
        between = text[pairs[-2]["value_end"] : last["start"]]
        if "\n" not in between and "#" not in between:
            separator = between
    return text[:end] + separator + _pair_text(key, value, layout) + text[end:]


def _remove_pair(text, attr, index):
    pairs = attr["pairs"]
    pair = pairs[index]
    if len(pairs) == 1:
        raise ConfError(
            "removing {} would leave {} empty: use state absent for the section".format(
                pair["key"], attr["name"]
            ),
            pair["line"],
        )
    start = _line_start(text, pair["start"])
    own_line = _blank(text[start : pair["start"]])
    if index < len(pairs) - 1:
        nxt = pairs[index + 1]
        comma = pair["comma"]
        eol = _line_end(text, comma)
        after = text[comma + 1 : eol].strip(" \t\r")
        if (
            own_line
            and "\n" not in text[pair["value_end"] : comma]
            and (not after or after.startswith("#"))
            and eol < nxt["start"]
        ):
            return text[:start] + text[eol + 1 :]
        return text[: pair["start"]] + text[nxt["start"] :]
    prev = pairs[index - 1]
    comma = prev["comma"]
    eol = _line_end(text, pair["value_end"])
    rest = text[pair["value_end"] : eol]
    prev_comment = "#" in text[comma : _line_end(text, comma)]
    if own_line and _blank(rest):
        # "]" on a later line: this pair's lines go, the previous pair loses its comma.
        return _splice(text, [(comma, comma + 1, ""), (start, eol + 1, "")])
    if own_line and prev_comment:
        return _splice(text, [(comma, comma + 1, ""), (start, pair["value_end"], "")])
    return text[: prev["value_end"]] + text[pair["value_end"] :]


def _edit_section(text, spec):
    """Apply one section request; return (text, changed)."""
    attrs, named, found = _find_sections(text, spec)
    what = _describe(spec)
    if spec["state"] == "absent":
        if not spec["match"] and len(found) > 1:
            raise ConfError(
                "{} appears {} times (lines {}): give match to say which".format(
                    what, len(found), ", ".join(str(a["line"]) for a in found)
                ),
                found[1]["line"],
            )
        for attr in reversed(found):
            text = _comment_out(text, attr["start"], attr["end"], attr["name"], attr["line"])
        return text, bool(found)

    wanted = dict(spec["match"])
    wanted.update(spec["attributes"])
    if len(found) > 1:
        raise ConfError(
            "{} matches {} sections (lines {}): add keys to match".format(
                what, len(found), ", ".join(str(a["line"]) for a in found)
            ),
            found[1]["line"],
        )
    if not found:
        return _create_section(text, spec, attrs, named, wanted), True

    index = attrs.index(found[0])
    changed = False
    for key, value in wanted.items():
        attr = parse_one(text)[index]
        hits = [p for p in attr["pairs"] if p["key"].upper() == key.upper()]
        if len(hits) > 1:
            raise ConfError(
                "{} holds {} twice (lines {}); refusing to guess which one counts".format(
                    attr["name"], key, ", ".join(str(p["line"]) for p in hits)
                ),
                hits[1]["line"],
            )
        if value is None:
            if hits:
                text = _remove_pair(text, attr, attr["pairs"].index(hits[0]))
                changed = True
        elif not hits:
            text = _add_pair(text, attr, key, value)
            changed = True
        elif hits[0]["value"] != value:
            pair = hits[0]
            text = text[: pair["value_start"]] + quote_one(value) + text[pair["value_end"] :]
            changed = True
    if spec["exclusive"]:
        keep = {k.upper() for k, v in wanted.items() if v is not None}
        while True:
            attr = parse_one(text)[index]
            extra = [i for i, p in enumerate(attr["pairs"]) if p["key"].upper() not in keep]
            if not extra:
                break
            text = _remove_pair(text, attr, extra[0])
            changed = True
    return text, changed


def _create_section(text, spec, attrs, named, wanted):
    items = [(k, v) for k, v in wanted.items() if v is not None]
    if not items:
        raise ConfError(f"{_describe(spec)} does not exist and there is nothing to create it with")
    examples = []
    if spec["insert"] == "after_example":
        examples = [
            e
            for e in find_examples(text, spec["name"], "vector", attrs)
            if _matches(e["attr"], spec["match"])
        ]
    if examples:
        reference, reference_text = examples[-1]["attr"], examples[-1]["text"]
        pos = examples[-1]["end"]
    elif named and spec["insert"] != "end":
        reference, reference_text = named[-1], text
        pos = min(_line_end(text, named[-1]["end"]) + 1, len(text))
    else:
        reference = named[-1] if named else None
        reference_text = text
        pos = len(text)
    if reference is not None:
        layout = _section_layout(reference_text, reference)
        name = reference["name"]
    else:
        layout = {
            "multiline": True,
            "indent": "    ",
            "column": None,
            "spaced": True,
            "close_own_line": True,
            "case": None,
            "aligned": True,
        }
        name = spec["name"]
    items = [(_apply_case(k, layout["case"]), v) for k, v in items]
    return _insert_lines(text, pos, render_section(name, items, layout))


def _verify_one(text, settings, sections):
    """Parse the result again and check it says what was asked."""
    attrs = parse_one(text)
    for name, value in settings.items():
        same = [a for a in attrs if a["name"].upper() == name.upper()]
        expected = [] if value is None else [value]
        if [a["value"] for a in same] != expected:
            raise ConfError(f"{name} does not read back as requested (do two requests conflict?)")
    for spec in sections:
        found = _find_sections(text, spec)[2]
        if spec["state"] == "absent":
            ok = not found
        else:
            ok = len(found) == 1
            if ok:
                values = _section_values(found[0])
                wanted = dict(spec["match"])
                wanted.update(spec["attributes"])
                ok = all(values.get(k.upper()) == v for k, v in wanted.items())
                if spec["exclusive"]:
                    ok = ok and set(values) == {
                        k.upper() for k, v in wanted.items() if v is not None
                    }
        if not ok:
            raise ConfError(
                f"{_describe(spec)} does not read back as requested (do two requests conflict?)"
            )


# ---------------------------------------------------------------------------------------------
# Shell fragments (kvmrc)
# ---------------------------------------------------------------------------------------------

_SHELL_SAFE = re.compile(r"^[A-Za-z0-9_./:+,@%=-]+$")


def shell_quote(text):
    """Double-quote a string for a POSIX shell fragment."""
    return '"' + "".join("\\" + ch if ch in '\\"$`' else ch for ch in text) + '"'


def render_shell(value, bare):
    """A value as a shell word: bare when asked and nothing in it needs quoting."""
    if bare and _SHELL_SAFE.match(value):
        return value
    return shell_quote(value)


def _verify_shell(text, settings):
    assignments = parse_shell(text)
    for name, value in settings.items():
        same = [a for a in assignments if a["name"] == name]
        ok = (
            not same
            if value is None
            else same and all(a["value"] == value and not a["expansion"] for a in same)
        )
        if not ok:
            raise ConfError(f"{name} does not read back as requested")


def _shell_example(text, name):
    """(end offset, export, bare) of the last commented-out assignment of name, or None."""
    head = re.compile(r"[ \t]*#+[ \t]*(export[ \t]+)?" + re.escape(name) + "=")
    found = None
    pos = 0
    n = len(text)
    while pos < n:
        eol = _line_end(text, pos)
        m = head.match(text, pos, eol)
        if not m:
            pos = eol + 1
            continue
        word, _body, last_eol = _parse_commented(text, m.end(), eol, lambda b: shell_word(b, 0))
        if word is not None:
            found = (min(last_eol + 1, n), bool(m.group(1)), word[3])
        pos = last_eol + 1
    return found


def _set_shell(text, name, value):
    assignments = [a for a in parse_shell(text) if a["name"] == name]
    if value is None:
        for a in reversed(assignments):
            text = _comment_out(text, a["start"], a["end"], name, a["line"])
        return text, bool(assignments)
    if assignments:
        edits = [
            (a["value_start"], a["value_end"], render_shell(value, a["bare"]))
            for a in assignments
            if a["expansion"] or a["value"] != value
        ]
        return _splice(text, edits), bool(edits)
    example = _shell_example(text, name)
    if example:
        pos, export, bare = example
    else:
        every = parse_shell(text)
        pos = len(text)
        export = not every or any(a["export"] for a in every)
        bare = bool(every) and every[-1]["bare"]
    line = "{}{}={}\n".format("export " if export else "", name, render_shell(value, bare))
    return _insert_lines(text, pos, line), True


# ---------------------------------------------------------------------------------------------
# The request
# ---------------------------------------------------------------------------------------------


def _normalize(fmt, settings, sections):
    """Validate the request; return settings and sections with values as strings."""
    if fmt not in FORMATS:
        raise ConfError("format must be one of {}".format(", ".join(FORMATS)))
    name_re = ONE_NAME_RE if fmt == "one" else SHELL_NAME_RE
    if not isinstance(settings, dict):
        raise ConfError("settings must be a mapping of name to value")
    clean = {}
    for name, value in settings.items():
        if not isinstance(name, str) or not name_re.match(name):
            raise ConfError(f"invalid name {name!r} in settings")
        clean[name] = None if value is None else _text_value(value, name)
        if fmt == "one" and clean[name] is not None:
            quote_one(clean[name])
    if fmt == "one":
        seen = {}
        for name in clean:
            if name.upper() in seen:
                raise ConfError(
                    f"settings name {name.upper()} twice ({seen[name.upper()]}, {name})"
                )
            seen[name.upper()] = name
    if sections and fmt != "one":
        raise ConfError("sections exist only in format one")
    specs = []
    for raw in sections:
        unknown = sorted(set(raw) - set(SECTION_SPEC))
        if unknown:
            raise ConfError("unknown section option(s): {}".format(", ".join(unknown)))
        spec = {"match": {}, "attributes": {}, "state": "present", "exclusive": False}
        spec["insert"] = "after_example"
        spec.update({k: v for k, v in raw.items() if v is not None})
        name = spec.get("name")
        if not isinstance(name, str) or not ONE_NAME_RE.match(name):
            raise ConfError(f"invalid section name {name!r}")
        if spec["state"] not in STATES or spec["insert"] not in PLACEMENTS:
            raise ConfError(f"{name}: invalid state or insert")
        for field in ("match", "attributes"):
            if not isinstance(spec[field], dict):
                raise ConfError(f"{name}: {field} must be a mapping")
            converted = {}
            for key, value in spec[field].items():
                if not isinstance(key, str) or not ONE_NAME_RE.match(key):
                    raise ConfError(f"{name}: invalid key {key!r} in {field}")
                if value is None and field == "match":
                    raise ConfError(f"{name}: match {key} has no value")
                if any(k.upper() == key.upper() for k in converted):
                    raise ConfError(f"{name}: {field} names {key.upper()} twice")
                converted[key] = None if value is None else _text_value(value, f"{name} {key}")
                if converted[key] is not None:
                    quote_one(converted[key])
            spec[field] = converted
        for key, value in spec["attributes"].items():
            for mkey, mvalue in spec["match"].items():
                if mkey.upper() == key.upper() and mvalue != value:
                    raise ConfError(
                        f"{name}: {key} is {mvalue!r} in match and {value!r} in attributes"
                    )
        if spec["state"] == "absent" and (spec["attributes"] or spec["exclusive"]):
            raise ConfError(f"{name}: state absent takes no attributes and no exclusive")
        specs.append(spec)
    return clean, specs


def edit_config(content, fmt="one", settings=None, sections=None):
    """Apply a request to the text of a file.

    Returns (new_content, keys_changed). Raises ConfError for a file that cannot be parsed (with
    its line) or a request that cannot be applied; nothing is half-applied.
    """
    settings, sections = _normalize(fmt, settings or {}, sections or [])
    keys_changed = []
    text = content
    if fmt == "shell":
        parse_shell(text)
        for name, value in settings.items():
            text, changed = _set_shell(text, name, value)
            if changed:
                keys_changed.append(name)
        _verify_shell(text, settings)
        return text, keys_changed
    parse_one(text)
    for name, value in settings.items():
        text, changed = _set_single(text, name, value)
        if changed:
            keys_changed.append(name)
    for spec in sections:
        text, changed = _edit_section(text, spec)
        if changed:
            keys_changed.append(_describe(spec))
    _verify_one(text, settings, sections)
    return text, keys_changed


# ---------------------------------------------------------------------------------------------
# Module
# ---------------------------------------------------------------------------------------------


def _read(path):
    """The file's text, read without following a link another account could have planted (the
    kvmrc is in the remotes, which oneadmin owns): FileNotFoundError when it does not exist."""
    found = read_file(path)
    if found is None:
        raise FileNotFoundError(2, "No such file or directory", path)
    return found[0].decode("utf-8", "surrogateescape")


def _write_atomic(module, path, content, backup):
    """Write content to a temporary file beside path, with path's owner and mode, then rename it
    over path (a link put there meanwhile is replaced, not written through); the backup's path."""
    dir_fd, parts, name, st, rest = locate(path)
    try:
        if rest or st is None:
            raise FileNotFoundError(2, "No such file or directory", path)
        shown = join([*parts, name])
        fd, st = open_file_at(dir_fd, name, shown)
        try:
            current = read_fd(fd)
        finally:
            os.close(fd)
        backup_file = None
        if backup:
            stamp = time.strftime("%Y-%m-%d@%H:%M:%S", time.localtime())
            backup_file = join([*parts, copy_as_backup(dir_fd, name, current, st, stamp)])

        def label(tmp):
            if module.selinux_enabled():  # as atomic_move labels a replaced file
                tmp_path = join([*parts, tmp])
                module.set_context_if_different(tmp_path, module.selinux_context(shown), False)

        data = content.encode("utf-8", "surrogateescape")
        mode = stat.S_IMODE(st.st_mode)
        replace_file(dir_fd, name, data, st.st_uid, st.st_gid, mode, before=label)
        return backup_file
    finally:
        os.close(dir_fd)


SECTION_SPEC = {
    "name": {"type": "str", "required": True},
    "match": {"type": "dict", "default": {}},
    "attributes": {"type": "dict", "default": {}},
    "state": {"type": "str", "default": "present", "choices": list(STATES)},
    "exclusive": {"type": "bool", "default": False},
    "insert": {"type": "str", "default": "after_example", "choices": list(PLACEMENTS)},
}


# An attribute whose name says it holds a secret: its change is reported without the values.
_SECRET_KEY_RE = re.compile(
    r"(^|_)(pass|passwd|password|passphrase|secrets?|tokens?|credentials?|keys?|auth)($|_)",
    re.IGNORECASE,
)


def change_sentences(path, before, after, keys_changed):
    """One sentence per changed attribute ("oned.conf: PORT "2633" -> "2634"") or section
    ("oned.conf: VM_MAD[NAME=kvm] set"), never a secret attribute's value. ``before`` and
    ``after``: read_values of the file before and after."""
    name = os.path.basename(path)
    old, new = before.get("settings") or {}, after.get("settings") or {}
    sentences = []
    for key in keys_changed:
        upper = key.upper()
        if upper not in old and upper not in new:
            sentences.append("%s: %s set" % (name, key))
        elif _SECRET_KEY_RE.search(key):
            sentences.append("%s: %s changed" % (name, key))
        else:
            sentences.append(
                "%s: %s %s -> %s" % (name, key, _shown(old.get(upper)), _shown(new.get(upper)))
            )
    return [{"concern": "config", "text": text} for text in sentences]


def _shown(value):
    if value is None:
        return "not set"
    if isinstance(value, list):
        return "[%s]" % ", ".join(_shown(v) for v in value)
    return '"%s"' % value


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "format": {"type": "str", "default": "one", "choices": list(FORMATS)},
            "settings": {"type": "dict", "default": {}},
            "sections": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": SECTION_SPEC,
            },
            "query": {"type": "bool", "default": False},
            "backup": {"type": "bool", "default": True},
        },
        add_file_common_args=True,
        supports_check_mode=True,
    )
    path = module.params["path"]
    fmt = module.params["format"]
    settings = module.params["settings"]
    sections = module.params["sections"]
    result = {"changed": False, "keys_changed": [], "path": path}

    if os.path.isdir(path):
        module.fail_json(msg=f"{path} is a directory", **result)
    if not os.path.lexists(path):
        module.fail_json(msg=f"{path} does not exist", **result)
    if module.params["query"] and (settings or sections):
        module.fail_json(msg="query changes nothing: give no settings and no sections", **result)
    try:
        before = _read(path)
    except UnsafePath as exc:
        module.fail_json(msg=str(exc), **result)
    except OSError as exc:
        module.fail_json(msg=f"cannot read {path}: {exc}", **result)

    try:
        after, keys_changed = edit_config(before, fmt, settings, sections)
        result["values"] = read_values(after, fmt)
    except ConfError as exc:
        if exc.line is not None:
            result["line"] = exc.line
        module.fail_json(msg=f"{path}: {exc}", **result)

    changed = after != before
    result["changed"] = changed
    result["keys_changed"] = keys_changed
    result["kvmprep_changes"] = []
    if changed:
        try:
            result["kvmprep_changes"] = change_sentences(
                path, read_values(before, fmt), result["values"], keys_changed
            )
        except ConfError:
            # A file oned could not read either: the keys, without their old values.
            result["kvmprep_changes"] = change_sentences(path, {}, {}, keys_changed)
    # Whatever the diff mode: Ansible shows a result's diff only in diff mode, and a module
    # has no public way to ask for it. Only a change has one (no file's text on a no-op run).
    if changed:
        result["diff"] = {
            "before": before,
            "after": after,
            "before_header": path,
            "after_header": path,
        }

    if changed and not module.check_mode:
        try:
            backup_file = _write_atomic(module, path, after, module.params["backup"])
        except UnsafePath as exc:
            module.fail_json(msg=str(exc), **result)
        except OSError as exc:
            module.fail_json(msg=f"cannot write {path}: {exc}", **result)
        if backup_file is not None:
            result["backup_file"] = backup_file

    if not module.params["query"]:
        file_args = module.load_file_common_arguments(module.params)
        result["changed"] = module.set_fs_attributes_if_different(file_args, result["changed"])
        if result["changed"] and not changed:
            result["kvmprep_changes"] = [
                {
                    "concern": "config",
                    "text": "%s: owner, group or mode set" % os.path.basename(path),
                }
            ]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
