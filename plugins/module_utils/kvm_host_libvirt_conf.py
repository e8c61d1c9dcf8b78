# -*- coding: utf-8 -*-
"""libvirt's configuration syntax (qemu.conf, libvirtd.conf, virtqemud.conf, virtproxyd.conf):
the one parser the probe (what libvirt will read) and kvm_host_conf (what to replace) share.

It follows libvirt's own parser (src/util/virconf.c), and was checked against libvirt 9.0's
virConfReadString (tests/unit/test_libvirt_conf.py lists the cases):
- statements ``name = value``, each ended by a newline, ';' or the end of the text; a name
  starts with a letter, then letters, digits, '_';
- a value is an integer (optional sign), a string in "..." or '...' (no escapes, never across
  a line), a \"\"\"triple-quoted\"\"\" string (may span lines; only when more than 6 characters
  follow its first quote), or a list [a, b, ] of values, which may span lines;
- '#' starts a comment to the end of the line, on its own line or after a value, but NOT
  inside a list (libvirt: "expecting a value");
- blanks are space and tab; '\\r' ends a line like '\\n';
- libvirt stops at the first error and loads nothing: the daemon does not start. It reads the
  FIRST assignment of a name (virConfGetValue), later ones are ignored.

Standard library only, Python 3.6 syntax: imported on the host by the modules.
"""

BLANKS = " \t"
EOL = "\n\r"
_NAME_FIRST = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_NAME_REST = _NAME_FIRST + "0123456789_"
_DIGITS = "0123456789"


class ConfSyntaxError(ValueError):
    """What libvirt would say, where: ``pos`` in the text, ``line`` as libvirt counts it (the
    newlines it has passed, plus one)."""

    def __init__(self, message, pos=None, line=None):
        ValueError.__init__(self, message)
        self.message = message
        self.pos = pos
        self.line = line


class IncompleteValue(ConfSyntaxError):
    """The text ends inside the value (a list or a triple-quoted string not closed yet): when
    the text is a part of a file, the lines that follow may complete it."""


def _skip(text, pos, chars):
    n = len(text)
    while pos < n and text[pos] in chars:
        pos += 1
    return pos


def _to_eol(text, pos):
    n = len(text)
    while pos < n and text[pos] not in EOL:
        pos += 1
    return pos


def _fail(text, message, pos, eof):
    if not eof and pos >= len(text):
        raise IncompleteValue(message, pos)
    raise ConfSyntaxError(message, pos)


def _string(text, pos, eof):
    n = len(text)
    # libvirt takes """ as a triple quote only when more than 6 characters follow the first;
    # a part of a file (eof False) may go on, so it is a triple quote there too.
    if text.startswith('"""', pos) and (pos + 6 < n or not eof):
        end = text.find('"""', pos + 3)
        if end < 0:
            if not eof:
                raise IncompleteValue("unterminated string", n)
            # libvirt gives up two characters before the end (its line count stops there).
            raise ConfSyntaxError("unterminated string", max(pos + 3, n - 2))
        return text[pos + 3 : end], end + 3
    quote = text[pos]
    end = pos + 1
    while end < n and text[end] != quote and text[end] not in EOL:
        end += 1
    if end >= n or text[end] != quote:
        raise ConfSyntaxError("unterminated string", end)
    return text[pos + 1 : end], end + 1


def _number(text, pos):
    start = pos
    if text[pos] in "+-":
        pos += 1
    digits = _skip(text, pos, _DIGITS)
    if digits == pos:
        raise ConfSyntaxError("unterminated number", pos)
    return int(text[start:digits]), digits


def _list(text, pos, eof):
    items = []
    pos = _skip(text, pos + 1, BLANKS + EOL)
    n = len(text)
    if pos < n and text[pos] != "]":
        item, pos = parse_value(text, pos, eof)
        items.append(item)
        pos = _skip(text, pos, BLANKS + EOL)
    while pos < n and text[pos] != "]":
        if text[pos] != ",":
            raise ConfSyntaxError("expecting a separator in list", pos)
        pos = _skip(text, pos + 1, BLANKS + EOL)
        if pos < n and text[pos] == "]":
            break
        item, pos = parse_value(text, pos, eof)
        items.append(item)
        pos = _skip(text, pos, BLANKS + EOL)
    if pos >= n:
        _fail(text, "list is not closed with ]", pos, eof)
    return items, pos + 1


def parse_value(text, pos=0, eof=True):
    """(value, position after it) of the value at text[pos:] (blanks first are skipped): an
    int, a str or a list of them. ``eof``: text ends where the file ends; otherwise running out
    of text inside the value raises IncompleteValue. ConfSyntaxError when it is not one."""
    pos = _skip(text, pos, BLANKS)
    if pos >= len(text):
        _fail(text, "expecting a value", pos, eof)
    ch = text[pos]
    if ch in "\"'":
        return _string(text, pos, eof)
    if ch == "[":
        return _list(text, pos, eof)
    if ch in _DIGITS or ch in "+-":
        return _number(text, pos)
    raise ConfSyntaxError("expecting a value", pos)


def end_of_statement(text, pos):
    """Position of the separator after a value (blanks and a trailing comment skipped): a
    newline, ';' or the end; ConfSyntaxError ("expecting a separator") when something else."""
    pos = _skip(text, pos, BLANKS)
    if pos < len(text) and text[pos] == "#":
        pos = _to_eol(text, pos)
    if pos < len(text) and text[pos] not in EOL and text[pos] != ";":
        raise ConfSyntaxError("expecting a separator", pos)
    return pos


def statements(text):
    """Each statement of a libvirt config text, in order, as (name, value, error): name None
    when the statement has none (a syntax error before its name was read), error a
    ConfSyntaxError with its libvirt line, or None. libvirt stops at the first error; this goes
    on at the next line (so that the probe can still report the keys that parse)."""
    text = text or ""
    n = len(text)
    pos = 0
    while pos < n:
        start = pos
        pos = _skip(text, pos, BLANKS + EOL)
        if pos < n and text[pos] == "#":
            pos = _to_eol(text, pos)
        else:
            try:
                pos, name, value = _statement(text, pos)
            except ConfSyntaxError as exc:
                exc.line = text.count("\n", 0, exc.pos) + 1
                yield exc.name, None, exc
                # Go on after the line libvirt stopped on.
                pos = max(_to_eol(text, exc.pos) + 1, start + 1)
                continue
            yield name, value, None
        # The separator: a newline, or ';' (both followed by any blank lines).
        pos = _skip(text, pos, BLANKS)
        if pos < n and (text[pos] in EOL or text[pos] == ";"):
            pos = _skip(text, pos + 1, BLANKS + EOL)


def _statement(text, pos):
    """(position after, name, value) of the statement at pos; a ConfSyntaxError raised here has
    ``name``, the statement's name or None."""
    name = None
    try:
        if pos >= len(text) or text[pos] not in _NAME_FIRST:
            raise ConfSyntaxError("expecting a name", pos)
        end = _skip(text, pos + 1, _NAME_REST)
        name = text[pos:end]
        pos = _skip(text, end, BLANKS)
        if pos >= len(text) or text[pos] != "=":
            raise ConfSyntaxError("expecting an assignment", pos)
        value, pos = parse_value(text, pos + 1)
        pos = end_of_statement(text, pos)
    except ConfSyntaxError as exc:
        exc.name = name
        raise
    return pos, name, value


def _typed(value):
    """Whether a value is one the libvirt settings take: an int, a str or a list of str."""
    if isinstance(value, list):
        return all(isinstance(item, str) for item in value)
    return True


def read_conf(text):
    """(keys, invalid, syntax_error) of a libvirt config text: the settings libvirt reads (the
    first assignment of each name), the names whose first assignment does not parse or is a
    list of anything but strings (which libvirt refuses for every list setting), and the
    first error libvirt would stop at ({"line", "message"}), or None."""
    keys = {}
    invalid = []
    first = None
    for name, value, error in statements(text):
        if error is not None and first is None:
            first = {"line": error.line, "message": error.message}
        if name is None or name in keys or name in invalid:
            continue
        if error is None and _typed(value):
            keys[name] = value
        else:
            invalid.append(name)
    return keys, invalid, first


def parse_conf(text):
    """(keys, invalid) as read_conf."""
    keys, invalid, _error = read_conf(text)
    return keys, invalid


def conf_syntax_error(text):
    """{"line", "message"} of the first error libvirt would stop at, or None."""
    return read_conf(text)[2]


def parse_conf_value(text):
    """The value of one assignment's text after '=' (a trailing comment allowed); raises
    ConfSyntaxError (a ValueError) when libvirt would not take it."""
    value, pos = parse_value(text)
    pos = end_of_statement(text, pos)
    if _skip(text, pos, BLANKS + EOL + ";") < len(text):
        raise ConfSyntaxError("expecting a separator", pos)
    return value
