#!/usr/bin/python
"""kvm_host_conf: key-level editor for libvirt-style and shell-style configuration files."""

# Ansible module conventions: the documentation strings come before the imports, and os.path is
# used throughout (the code runs on the target's python3, standard library only).
DOCUMENTATION = r"""
---
module: kvm_host_conf
short_description: Set, add or remove keys in libvirt-style or shell-style configuration files
description:
  - Edits individual keys of a libvirt configuration file (C(/etc/libvirt/qemu.conf),
    C(/etc/libvirt/libvirtd.conf)) or of a shell-style defaults file (C(/etc/default/libvirtd),
    C(/etc/sysconfig/libvirtd)), keeping comments, blank lines, key order and every other key
    byte-identical.
  - One call edits many keys of one file, producing one diff and at most one backup.
  - An active assignment of a key is replaced in place when its parsed value differs from the
    wanted one (values are compared, not text, so C(user="oneadmin") equals C(user = "oneadmin")).
  - A key with no active assignment is inserted right after the last commented example of it
    (for instance C(#user = "root")), the comment being kept; otherwise it is appended at the end.
  - The file is written atomically (temporary file in the same directory, then rename), keeping
    the original file's mode and owner; I(mode), I(owner) and I(group) are applied afterwards.
version_added: "0.1.0"
author:
  - kvmprep maintainers (!UNKNOWN)
options:
  path:
    description: Path of the file to edit (or I(edits)).
    type: path
  settings:
    description:
      - Keys to set, as a mapping of key to value.
      - "C(libvirt) style: a boolean is written C(1)/C(0), an integer as digits, a string
        double-quoted (single-quoted when it contains a double quote, triple-quoted when it
        contains both quote kinds or a newline, as libvirt's own writer does: libvirt strings
        have no backslash escapes), a list as C([ \"a\", \"b\" ])."
      - "C(shell) style: a string is written C(KEY=\"value\") with C(\\), C(\"), C($) and the
        backtick escaped; an integer bare."
      - A value of C(null) means the key must not be active; its active assignments are
        commented out by prefixing them with C(#).
      - "C(shell) style only: a mapping with C(add_words) and/or C(remove_words) (lists of
        strings) edits the words of the current value (empty when the key is not set): words of
        C(remove_words) are removed, then words of C(add_words) appended when missing."
      - Required with I(path).
    type: dict
  style:
    description: Syntax of the file.
    type: str
    choices: [libvirt, shell]
    default: libvirt
  backup:
    description: Keep a timestamped copy of the original file when it is changed.
    type: bool
    default: true
  create:
    description:
      - Create the file when it does not exist. When C(false), a missing file is an error.
    type: bool
    default: false
  edits:
    description:
      - Several files in one call (one round trip instead of one per file), edited in order,
        each with its own diff and backup; instead of I(path). The first edit that fails stops
        the call; the files before it stay edited.
    type: list
    elements: dict
    suboptions:
      path:
        description: Path of the file to edit.
        type: path
        required: true
      settings:
        description: As I(settings).
        type: dict
        required: true
      style:
        description: As I(style).
        type: str
        choices: [libvirt, shell]
        default: libvirt
      backup:
        description: As I(backup).
        type: bool
        default: true
      create:
        description: As I(create).
        type: bool
        default: false
      mode:
        description: Mode of the file, applied after the edit.
        type: raw
      owner:
        description: Owner of the file, applied after the edit.
        type: str
      group:
        description: Group of the file, applied after the edit.
        type: str
notes:
  - Keys must be plain identifiers (letters, digits, underscore).
  - Multi-line values (libvirt lists spanning lines, triple-quoted strings, shell quoted strings
    spanning lines) are recognised and replaced or commented out as a whole.
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
- name: Run QEMU as oneadmin, without dynamic ownership
  kvmprep.kvm.kvm_host_conf:
    path: /etc/libvirt/qemu.conf
    settings:
      user: oneadmin
      group: oneadmin
      dynamic_ownership: false
  notify: Restart libvirt

- name: TCP listener settings of a classic libvirtd
  kvmprep.kvm.kvm_host_conf:
    path: /etc/libvirt/libvirtd.conf
    settings:
      listen_tcp: true
      auth_tcp: sasl
      listen_addr: null
      sasl_allowed_username_list: ["oneadmin"]

- name: Make libvirtd listen (classic layout)
  kvmprep.kvm.kvm_host_conf:
    path: /etc/default/libvirtd
    style: shell
    create: true
    mode: "0644"
    settings:
      LIBVIRTD_ARGS:
        add_words: ["--listen"]

- name: With socket activation --listen is fatal, remove both spellings
  kvmprep.kvm.kvm_host_conf:
    path: /etc/default/libvirtd
    style: shell
    settings:
      LIBVIRTD_ARGS:
        remove_words: ["-l", "--listen"]
"""

RETURN = r"""
changed:
  description: Whether the file was (or, in check mode, would be) changed.
  returned: always
  type: bool
keys_changed:
  description: Keys whose lines were (or would be) replaced, inserted or commented out.
  returned: with I(path)
  type: list
  elements: str
  sample: ["user", "group", "dynamic_ownership"]
backup_file:
  description: Path of the backup of the original file.
  returned: with I(path), when the file was written with I(backup=true) and existed before
  type: str
  sample: /etc/libvirt/qemu.conf.12345.2024-01-01@10:00:00~
diff:
  description:
    - Content before and after, with the file path as headers; with I(edits), a list of them.
  returned: when something changed (Ansible shows it in diff mode)
  type: raw
  sample:
    before: "#user = \"root\"\n"
    after: "#user = \"root\"\nuser = \"oneadmin\"\n"
    before_header: /etc/libvirt/qemu.conf
    after_header: /etc/libvirt/qemu.conf
path:
  description: The edited path.
  returned: with I(path)
  type: str
edits:
  description:
    - With I(edits), per file in order, its C(path), C(changed), C(keys_changed) and
      C(backup_file).
  returned: with I(edits)
  type: list
  elements: dict
kvmprep_changes:
  description:
    - What changed (in check mode, would change), one sentence per key, for kvmprep's change
      report, e.g. "qemu.conf - dynamic_ownership 1 -> 0" with a colon for the dash. The value of
      a key whose name says it holds a secret (password, secret, token, key...) is left out.
  returned: always (empty when nothing changed)
  type: list
  elements: dict
  sample: [{"concern": "config", "text": "qemu.conf: dynamic_ownership 1 -> 0"}]
"""

import os
import re
import tempfile

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_libvirt_conf import (
    IncompleteValue,
    end_of_statement,
)
from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_libvirt_conf import (
    parse_value as parse_libvirt_at,
)

STYLES = ("libvirt", "shell")
KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
WORD_OPS = ("add_words", "remove_words")


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def _render_libvirt_string(text):
    # Mirrors libvirt's virConfSaveValue: libvirt strings have no escape sequences, so the quote
    # character is chosen from the content instead of escaping it.
    if "\n" in text:
        if '"""' in text:
            raise ValueError('a libvirt string cannot contain a newline and \'"""\' at once')
        return '"""' + text + '"""'
    if '"' not in text:
        return '"' + text + '"'
    if "'" not in text:
        return "'" + text + "'"
    if '"""' in text or text.endswith('"'):
        raise ValueError(f"this string cannot be written in libvirt syntax: {text!r}")
    return '"""' + text + '"""'


def render_libvirt_value(value):
    """Render a Python value in libvirt config syntax."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _render_libvirt_string(value)
    if isinstance(value, (list, tuple)):
        items = []
        for item in value:
            if isinstance(item, (list, tuple, dict)) or item is None:
                raise ValueError(f"libvirt list items must be strings or integers, got {item!r}")
            items.append(render_libvirt_value(item))
        if not items:
            return "[ ]"
        return "[ " + ", ".join(items) + " ]"
    raise ValueError(f"unsupported value type for libvirt style: {type(value).__name__}")


def shell_quote(text):
    """Double-quote a string for a POSIX shell fragment."""
    out = []
    for ch in text:
        if ch in '\\"$`':
            out.append("\\")
        out.append(ch)
    return '"' + "".join(out) + '"'


def render_shell_value(value):
    """Render a Python value for a shell-style KEY=VALUE line."""
    if isinstance(value, bool):
        raise ValueError("booleans are ambiguous in shell style: give a string such as 'yes'")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return shell_quote(value)
    raise ValueError(f"unsupported value type for shell style: {type(value).__name__}")


def render_value(value, style):
    if style == "libvirt":
        return render_libvirt_value(value)
    return render_shell_value(value)


def render_line(key, value, style):
    if style == "libvirt":
        return f"{key} = {render_libvirt_value(value)}"
    return f"{key}={render_shell_value(value)}"


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


def parse_libvirt_value(text):
    """Parse the text after '=' of a libvirt assignment (may span lines for lists and
    triple-quoted strings), with the grammar the probe reads the files with
    (kvm_host_libvirt_conf, libvirt's own).

    Returns an int, a str or a list. Raises IncompleteValue when the value continues beyond the
    text and ValueError when it is not valid libvirt syntax. A trailing '# comment' or ';' is
    allowed after the value; another statement after ';' is not (this edits whole lines).
    """
    value, i = parse_libvirt_at(text, 0, eof=False)
    i = end_of_statement(text, i)
    if i < len(text) and text[i] == ";":
        rest = text[i + 1 :].lstrip(" \t")
        if rest and rest[0] not in "#\n\r":
            raise ValueError(f"unexpected text after the value: {rest.strip()!r}")
    return value


def parse_shell_word(text):
    """Parse the text after '=' of a shell assignment into its unquoted value.

    Returns (value, has_expansion) where has_expansion tells that the value contains an
    unescaped '$' or backtick outside single quotes (its text is then kept literally).
    Raises IncompleteValue for a quoted string not closed within the text.
    """
    out = []
    expansion = False
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\r\n;":
            break
        if ch == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise IncompleteValue("unterminated single-quoted string")
            out.append(text[i + 1 : end])
            i = end + 1
        elif ch == '"':
            j = i + 1
            while True:
                if j >= n:
                    raise IncompleteValue("unterminated double-quoted string")
                c = text[j]
                if c == "\\" and j + 1 < n and text[j + 1] in '\\"$`\n':
                    if text[j + 1] != "\n":
                        out.append(text[j + 1])
                    j += 2
                    continue
                if c == '"':
                    break
                if c in "$`":
                    expansion = True
                out.append(c)
                j += 1
            i = j + 1
        elif ch == "\\":
            if i + 1 < n and text[i + 1] != "\n":
                out.append(text[i + 1])
            i += 2
        else:
            if ch in "$`":
                expansion = True
            out.append(ch)
            i += 1
    rest = text[i:].lstrip(" \t\r;")
    if rest and not rest.startswith("#") and not rest.startswith("\n"):
        raise ValueError(f"unexpected text after the value: {rest.strip()!r}")
    return "".join(out), expansion


def parse_shell_value(text):
    return parse_shell_word(text)[0]


def parse_value(text, style):
    if style == "libvirt":
        return parse_libvirt_value(text)
    return parse_shell_value(text)


def canonical(value, style):
    """The value a rendered setting parses back to (what an existing value is compared with)."""
    return parse_value(render_value(value, style), style)


# ---------------------------------------------------------------------------------------------
# Line handling
# ---------------------------------------------------------------------------------------------


def split_lines(content):
    """Split on '\\n' only, keeping line endings (str.splitlines also splits on \\f, \\x1c...)."""
    parts = content.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _active_re(key):
    return re.compile(r"^(\s*)" + re.escape(key) + r"\s*=(.*)$", re.DOTALL)


def _commented_re(key):
    return re.compile(r"^\s*#\s*" + re.escape(key) + r"\s*=(.*)$", re.DOTALL)


def _value_span(lines, start, first_text, style, uncomment=False):
    """Find where a value starting on lines[start] ends.

    Returns (end_index, parsed_value, error) where error is None when the value parsed, or the
    ValueError message. end_index is inclusive. When the value is incomplete up to the end of
    the file (or of the comment block when uncomment is true), end is start and the error says
    so (error starts with 'incomplete').
    """
    text = first_text
    end = start
    while True:
        try:
            return end, parse_value(text, style), None
        except IncompleteValue as exc:
            if end + 1 >= len(lines):
                return start, None, f"incomplete: {exc}"
            nxt = lines[end + 1]
            if uncomment:
                m = re.match(r"^\s*#(.*)$", nxt, re.DOTALL)
                if not m:
                    return start, None, f"incomplete: {exc}"
                nxt = m.group(1)
            end += 1
            text += nxt
        except ValueError as exc:
            return end, None, str(exc)


def find_assignments(lines, key, style):
    """Return the active assignments of key as a list of dicts.

    Each dict has start, end (inclusive line indexes), indent, value (parsed, or None) and
    error (None when the value parsed).
    """
    rx = _active_re(key)
    found = []
    i = 0
    while i < len(lines):
        m = rx.match(lines[i])
        if not m:
            i += 1
            continue
        end, value, error = _value_span(lines, i, m.group(2), style)
        if error and error.startswith("incomplete"):
            raise ValueError(f"cannot find the end of the value of {key} at line {i + 1} ({error})")
        found.append({"start": i, "end": end, "indent": m.group(1), "value": value, "error": error})
        i = end + 1
    return found


def find_commented_example(lines, key, style):
    """Index of the line after which a new assignment of key goes, or None.

    That is the last commented example ('#key = ...'); when its value is a list continued on
    following commented lines, the last line of that commented block.
    """
    rx = _commented_re(key)
    last = None
    for i, line in enumerate(lines):
        if rx.match(line):
            last = i
    if last is None:
        return None
    first_text = rx.match(lines[last]).group(1)
    end, _value, error = _value_span(lines, last, first_text, style, uncomment=True)
    if error:
        return last
    return end


def _line_ending(line):
    if line.endswith("\r\n"):
        return "\r\n"
    if line.endswith("\n"):
        return "\n"
    return ""


def validate_settings(settings, style):
    """Raise ValueError when a key or value cannot be handled in this style."""
    if style not in STYLES:
        raise ValueError("style must be one of {}".format(", ".join(STYLES)))
    if not isinstance(settings, dict):
        raise ValueError("settings must be a mapping of key to value")
    for key, value in settings.items():
        if not isinstance(key, str) or not KEY_RE.match(key):
            raise ValueError(f"invalid key {key!r}: keys are letters, digits and '_'")
        if value is None:
            continue
        if isinstance(value, dict):
            if style != "shell":
                raise ValueError(f"{key}: add_words/remove_words need style=shell")
            unknown = sorted(set(value) - set(WORD_OPS))
            if unknown or not value:
                raise ValueError(f"{key}: a mapping value takes only add_words and remove_words")
            for op in WORD_OPS:
                words = value.get(op) or []
                if not isinstance(words, (list, tuple)) or not all(
                    isinstance(w, str) and w and not re.search(r"\s", w) for w in words
                ):
                    raise ValueError(f"{key}: {op} must be a list of words without spaces")
            continue
        try:
            render_value(value, style)
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None


def edit_words(current, add_words=None, remove_words=None):
    """Return the word list of current with remove_words removed, then add_words appended."""
    remove = set(remove_words or [])
    words = [w for w in (current or "").split() if w not in remove]
    for word in add_words or []:
        if word not in words:
            words.append(word)
    return words


def _set_key(lines, key, value, style):
    """Apply one setting to lines in place; return True when something changed."""
    assignments = find_assignments(lines, key, style)

    if value is None:
        changed = False
        for a in assignments:
            for idx in range(a["start"], a["end"] + 1):
                lines[idx] = "#" + lines[idx]
                changed = True
        return changed

    if isinstance(value, dict):
        current = assignments[-1]["value"] if assignments else ""
        if assignments and assignments[-1]["error"]:
            raise ValueError(f"cannot parse the current value of {key}")
        cur_words = (current or "").split()
        new_words = edit_words(current, value.get("add_words"), value.get("remove_words"))
        if new_words == cur_words and all(a["value"] == current for a in assignments):
            return False
        if not assignments and not new_words:
            return False
        last = assignments[-1] if assignments else None
        raw = "".join(lines[last["start"] : last["end"] + 1]) if last else "="
        if parse_shell_word(raw.split("=", 1)[1])[1]:
            raise ValueError(
                f"{key} contains a shell expansion ($ or backtick); edit it with a plain value"
            )
        value = " ".join(new_words)

    wanted = canonical(value, style)
    new_text = render_line(key, value, style)

    if assignments:
        changed = False
        # Replace from the bottom so earlier indexes stay valid.
        for a in reversed(assignments):
            if a["error"] is None and a["value"] == wanted:
                continue
            eol = _line_ending(lines[a["end"]]) or ""
            lines[a["start"] : a["end"] + 1] = [a["indent"] + new_text + eol]
            changed = True
        return changed

    anchor = find_commented_example(lines, key, style)
    if anchor is not None:
        if not _line_ending(lines[anchor]):
            lines[anchor] += "\n"
        lines.insert(anchor + 1, new_text + "\n")
        return True

    if lines and not _line_ending(lines[-1]):
        lines[-1] += "\n"
    lines.append(new_text + "\n")
    return True


def edit_config(content, settings, style="libvirt"):
    """Apply settings to the text content of a config file.

    Returns (new_content, keys_changed). Raises ValueError for settings that cannot be applied.
    """
    validate_settings(settings, style)
    lines = split_lines(content)
    keys_changed = []
    for key, value in settings.items():
        if _set_key(lines, key, value, style):
            keys_changed.append(key)
    return "".join(lines), keys_changed


# ---------------------------------------------------------------------------------------------
# Module
# ---------------------------------------------------------------------------------------------


def _read(path):
    with open(path, "rb") as handle:
        return handle.read().decode("utf-8", "surrogateescape")


def _write_atomic(module, path, content):
    """Write content to a temporary file beside path, then rename it over path."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content.encode("utf-8", "surrogateescape"))
        module.atomic_move(tmp, path, unsafe_writes=module.params["unsafe_writes"])
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# A key whose name says it holds a secret: its change is reported without the values.
_SECRET_KEY_RE = re.compile(
    r"(^|_)(pass|passwd|password|passphrase|secrets?|tokens?|credentials?|keys?)($|_)",
    re.IGNORECASE,
)


def _shown(value):
    """A value as the change report shows it (the judge's check sentences use the same form)."""
    if value is None:
        return "not set"
    if isinstance(value, str):
        return '"%s"' % value
    if isinstance(value, list):
        return "[%s]" % ", ".join(_shown(v) for v in value)
    return str(value)


def _last_value(lines, key, style):
    try:
        found = find_assignments(lines, key, style)
    except ValueError:
        return None
    return found[-1]["value"] if found else None


def change_sentences(path, before, after, keys_changed, style, created):
    """One sentence per changed key, in the words of check's config controls: "qemu.conf:
    dynamic_ownership 1 -> 0"."""
    name = os.path.basename(path)
    before_lines = split_lines(before)
    after_lines = split_lines(after)
    sentences = ["%s: created" % name] if created else []
    for key in keys_changed:
        if _SECRET_KEY_RE.search(key):
            sentences.append("%s: %s changed" % (name, key))
            continue
        old = None if created else _last_value(before_lines, key, style)
        new = _last_value(after_lines, key, style)
        sentences.append("%s: %s %s -> %s" % (name, key, _shown(old), _shown(new)))
    return sentences


def edit_file(module, spec, diffs):
    """Apply one edit (path, settings, style, backup, create and the file attributes); return
    its result. Fails the module, naming the file, when the edit cannot be made."""
    path = spec["path"]
    style = spec.get("style") or "libvirt"
    result = {"changed": False, "keys_changed": [], "path": path}

    if os.path.isdir(path):
        module.fail_json(msg=f"{path} is a directory", **result)
    exists = os.path.exists(path)
    if not exists and not spec.get("create"):
        module.fail_json(msg=f"{path} does not exist (set create=true to create it)", **result)
    if not exists and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        module.fail_json(msg=f"the directory of {path} does not exist", **result)

    try:
        before = _read(path) if exists else ""
    except OSError as exc:
        module.fail_json(msg=f"cannot read {path}: {exc}", **result)

    try:
        after, keys_changed = edit_config(before, spec["settings"], style)
    except ValueError as exc:
        module.fail_json(msg=f"{path}: {exc}", **result)

    changed = after != before or not exists
    result["changed"] = changed
    result["keys_changed"] = keys_changed
    sentences = (
        change_sentences(path, before, after, keys_changed, style, not exists) if changed else []
    )
    # Whatever the diff mode: Ansible shows a result's diff only in diff mode, and a module
    # has no public way to ask for it. Only a change has one (no file's text on a no-op run).
    if changed:
        diffs.append(
            {"before": before, "after": after, "before_header": path, "after_header": path}
        )

    if changed and not module.check_mode:
        if exists and spec.get("backup", True):
            result["backup_file"] = module.backup_local(path)
        try:
            _write_atomic(module, path, after)
        except OSError as exc:
            module.fail_json(msg=f"cannot write {path}: {exc}", **result)

    if os.path.exists(path):
        file_args = module.load_file_common_arguments(spec)
        result["changed"] = module.set_fs_attributes_if_different(file_args, result["changed"])
        if result["changed"] and not changed:
            sentences.append("%s: owner, group or mode set" % os.path.basename(path))
    result["kvmprep_changes"] = [{"concern": "config", "text": t} for t in sentences]
    return result


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path"},
            "settings": {"type": "dict"},
            "style": {"type": "str", "default": "libvirt", "choices": list(STYLES)},
            "backup": {"type": "bool", "default": True},
            "create": {"type": "bool", "default": False},
            "edits": {
                "type": "list",
                "elements": "dict",
                "options": {
                    "path": {"type": "path", "required": True},
                    "settings": {"type": "dict", "required": True},
                    "style": {"type": "str", "default": "libvirt", "choices": list(STYLES)},
                    "backup": {"type": "bool", "default": True},
                    "create": {"type": "bool", "default": False},
                    "mode": {"type": "raw"},
                    "owner": {"type": "str"},
                    "group": {"type": "str"},
                },
            },
        },
        add_file_common_args=True,
        mutually_exclusive=[("path", "edits")],
        required_one_of=[("path", "edits")],
        required_by={"path": ("settings",)},
        supports_check_mode=True,
    )
    diffs = []
    if module.params["edits"] is None:
        result = edit_file(module, module.params, diffs)
        if diffs:
            result["diff"] = diffs[0]
        module.exit_json(**result)
    # Several files in one call (one round trip), in order; the first that fails stops the
    # call, the ones before it stay edited (each with its backup).
    edits = [edit_file(module, spec, diffs) for spec in module.params["edits"]]
    result = {
        "changed": any(e["changed"] for e in edits),
        "edits": edits,
        "kvmprep_changes": [c for e in edits for c in e.pop("kvmprep_changes")],
    }
    if diffs:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
