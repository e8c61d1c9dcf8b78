"""Parsing of OpenNebula's configuration files, shared by kvmprep's one_frontend modules.

OpenNebula's attribute syntax (oned.conf, monitord.conf, vmm_exec_kvm.conf) and shell fragments
made of assignments (the KVM driver's kvmrc), parsed with the offsets of every attribute so that
one_frontend_conf can edit them structurally and one_frontend_probe can read them. Runs on the
front-end's python3 (3.6 or later), standard library only.
"""

import bisect
import re


class ConfError(ValueError):
    """A file or request the module refuses; line (1-based) when a line of the file is at fault."""

    def __init__(self, message, line=None):
        self.line = line
        self.reason = message
        ValueError.__init__(self, message if line is None else f"line {line}: {message}")


class Incomplete(ConfError):
    """The text ends inside an attribute (a vector or a quoted string is not closed)."""


def _line_end(text, pos):
    """Index of the newline ending the line that holds pos (len(text) on the last line)."""
    end = text.find("\n", pos)
    return len(text) if end < 0 else end


# ---------------------------------------------------------------------------------------------
# OpenNebula attribute syntax: parsing
# ---------------------------------------------------------------------------------------------
#
# The grammar is that of OpenNebula's template parser (template_parser.l / template_syntax.y):
# VARIABLE is [A-Za-z0-9_]+; "=" then either a quoted string ("..." where \" stands for a quote,
# newlines allowed), a bare word (anything but = # , [ ] blanks and newline), "[" for a vector of
# KEY = value pairs separated by commas, or a newline (an empty single attribute). Comments run
# from # to the end of the line wherever a name, a comma or a bracket may come.

_VARIABLE = re.compile(r"[A-Za-z0-9_]+")
_BARE = re.compile(r"[^=#,\[\] \t\r\n]+")


def _skip_layout(text, i):
    """Skip blanks, newlines and comments."""
    n = len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\r\n":
            i += 1
        elif ch == "#":
            i = _line_end(text, i) + 1
        else:
            break
    return min(i, n)


def _skip_blanks(text, i):
    n = len(text)
    while i < n and text[i] in " \t":
        i += 1
    return i


class _OneParser:
    def __init__(self, text, first_line=1):
        self.text = text
        self.first_line = first_line
        self.newlines = [m.start() for m in re.finditer("\n", text)]

    def line(self, pos):
        return bisect.bisect_left(self.newlines, pos) + self.first_line

    def error(self, pos, message, incomplete=False):
        return (Incomplete if incomplete else ConfError)(message, self.line(pos))

    def value(self, k, owner):
        """Parse the value at text[k]: (value, end, quoted)."""
        text = self.text
        ch = text[k]
        if ch == '"':
            j = k + 1
            while True:
                q = text.find('"', j)
                if q < 0:
                    raise self.error(k, f"the quoted value of {owner} is not closed", True)
                if text[q - 1] != "\\":
                    break
                j = q + 1
            value = text[k + 1 : q].replace('\\"', '"')
            end, quoted = q + 1, True
        elif ch == "#":
            raise self.error(
                k,
                f"{owner}: a comment where the value should be (OpenNebula would read it as one)",
            )
        else:
            m = _BARE.match(text, k)
            if not m:
                raise self.error(k, f"{owner}: expected a value, found {ch!r}")
            value, end, quoted = m.group(0), m.end(), False
            if '"' in value:
                raise self.error(k, f"{owner}: a '\"' inside an unquoted value")
        if "]]>" in text[k : max(end, _line_end(text, k))]:
            raise self.error(k, f"{owner}: ']]>' is not supported in a value or on its line")
        return value, end, quoted

    def assignment(self, i, what, prefix):
        """Parse 'NAME =' at text[i]: (name, offset of '=', offset of the value)."""
        text = self.text
        n = len(text)
        m = _VARIABLE.match(text, i)
        if not m:
            raise self.error(i, f"{prefix}expected {what}, found {text[i]!r}")
        name = m.group(0)
        j = _skip_blanks(text, m.end())
        if j >= n:
            raise self.error(i, f"{prefix}{name} has no '='", True)
        if text[j] != "=":
            raise self.error(j, f"{prefix}expected '=' after {name}, found {text[j]!r}")
        k = _skip_blanks(text, j + 1)
        if k >= n:
            raise self.error(j, f"{prefix}{name} has no value", True)
        return name, j, k

    def attribute(self, i):
        """Parse the attribute starting at text[i]; return it as a dict."""
        name, j, k = self.assignment(i, "an attribute name", "")
        attr = {"name": name, "start": i, "eq": j, "line": self.line(i)}
        if self.text[k] in "\r\n":
            # "NAME =" then a newline: an empty single attribute.
            attr.update(kind="single", value="", value_start=k, value_end=k, quoted=False, end=k)
            return attr
        if self.text[k] == "[":
            return self.vector(attr, k)
        value, end, quoted = self.value(k, name)
        attr.update(
            kind="single", value=value, value_start=k, value_end=end, quoted=quoted, end=end
        )
        return attr

    def vector(self, attr, opening):
        text = self.text
        n = len(text)
        name = attr["name"]
        unclosed = "{} = [ opened on line {} is not closed".format(name, attr["line"])
        pairs = []
        i = _skip_layout(text, opening + 1)
        if i >= n:
            raise self.error(opening, unclosed, True)
        while text[i] != "]":
            pair = self.pair(i, name)
            pairs.append(pair)
            i = _skip_layout(text, pair["value_end"])
            if i >= n:
                raise self.error(opening, unclosed, True)
            if text[i] == ",":
                pair["comma"] = i
                i = _skip_layout(text, i + 1)
                if i >= n:
                    raise self.error(opening, unclosed, True)
                if text[i] == "]":
                    raise self.error(i, f"{name}: a ',' before ']' (there is no trailing comma)")
            elif text[i] != "]":
                raise self.error(
                    i,
                    "{}: expected ',' or ']' after {}, found {!r}".format(
                        name, pair["key"], text[i]
                    ),
                )
        attr.update(kind="vector", pairs=pairs, open=opening, close=i, end=i + 1)
        return attr

    def pair(self, i, owner):
        key, j, k = self.assignment(i, "a key", f"{owner}: ")
        if self.text[k] in "\r\n":
            raise self.error(k, f'{owner}: {key} has no value (write "" for an empty one)')
        if self.text[k] == "[":
            raise self.error(k, f"{owner}: {key} opens a vector inside a vector")
        value, end, quoted = self.value(k, f"{owner} {key}")
        return {
            "key": key,
            "start": i,
            "eq": j,
            "value_start": k,
            "value_end": end,
            "value": value,
            "quoted": quoted,
            "line": self.line(i),
        }

    def attributes(self):
        text = self.text
        n = len(text)
        attrs = []
        i = _skip_layout(text, 0)
        while i < n:
            attr = self.attribute(i)
            j = _skip_blanks(text, attr["end"])
            if j < n and text[j] not in "#\r\n":
                raise self.error(
                    j,
                    "only one attribute per line is supported (found {!r} after {})".format(
                        text[j], attr["name"]
                    ),
                )
            attrs.append(attr)
            i = _skip_layout(text, attr["end"])
        return attrs


def parse_one(text):
    """Parse OpenNebula attribute syntax; return the attributes, each a dict with offsets.

    Every attribute has name, kind ('single' or 'vector'), start, end (offsets) and line; a single
    one has value, value_start and value_end; a vector has open and close (offsets of its
    brackets) and pairs, each with key, value, start, value_start, value_end and comma (when a
    comma follows). Raises ConfError (Incomplete when the text ends inside an attribute).
    """
    return _OneParser(text).attributes()


def one_values(attrs):
    """The parsed attributes as {'settings': {...}, 'sections': {...}} with upper-cased names."""
    settings = {}
    sections = {}
    for attr in attrs:
        name = attr["name"].upper()
        if attr["kind"] == "single":
            if name not in settings:
                settings[name] = attr["value"]
            elif isinstance(settings[name], list):
                settings[name].append(attr["value"])
            else:
                settings[name] = [settings[name], attr["value"]]
        else:
            section = {}
            for pair in attr["pairs"]:
                section.setdefault(pair["key"].upper(), pair["value"])
            sections.setdefault(name, []).append(section)
    return {"settings": settings, "sections": sections}


def _section_values(attr):
    values = {}
    for pair in attr["pairs"]:
        values.setdefault(pair["key"].upper(), pair["value"])
    return values


# ---------------------------------------------------------------------------------------------
# Shell fragments (kvmrc): parsing
# ---------------------------------------------------------------------------------------------

_SHELL_ASSIGNMENT = re.compile(r"[ \t]*(export[ \t]+)?([A-Za-z_][A-Za-z0-9_]*)=")


def shell_word(text, i):
    """Parse the shell word at text[i]; return (value, has_expansion, end, bare).

    has_expansion tells that an unescaped '$' or backtick occurs outside single quotes (the text
    is then kept literally in value). Raises Incomplete when a quoted string is not closed.
    """
    out = []
    expansion = False
    bare = True
    n = len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\r\n;":
            break
        if ch in "|&<>()":
            raise ConfError(f"unsupported shell syntax {ch!r} in a value")
        if ch == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise Incomplete("a single-quoted value is not closed")
            out.append(text[i + 1 : end])
            i, bare = end + 1, False
        elif ch == '"':
            j = i + 1
            while True:
                if j >= n:
                    raise Incomplete("a double-quoted value is not closed")
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
            i, bare = j + 1, False
        elif ch == "\\":
            if i + 1 < n and text[i + 1] != "\n":
                out.append(text[i + 1])
            i, bare = i + 2, False
        else:
            if ch in "$`":
                expansion = True
            out.append(ch)
            i += 1
    return "".join(out), expansion, min(i, n), bare


def parse_shell(text):
    """Parse a fragment of shell assignments; return them as dicts with offsets.

    Each has name, export (bool), value, expansion, bare, start (line start), value_start,
    value_end, end (end of its last line) and line. Raises ConfError for any other command.
    """
    assignments = []
    n = len(text)
    pos = 0
    line = 1
    while pos < n:
        eol = _line_end(text, pos)
        stripped = text[pos:eol].strip(" \t\r")
        if not stripped or stripped.startswith("#"):
            pos, line = eol + 1, line + 1
            continue
        m = _SHELL_ASSIGNMENT.match(text, pos, eol)
        if not m:
            raise ConfError(
                f"not a shell assignment (KEY=value or export KEY=value): {stripped!r}",
                line,
            )
        try:
            value, expansion, end, bare = shell_word(text, m.end())
        except ConfError as exc:
            raise type(exc)(f"{m.group(2)}: {exc.reason}", line) from None
        last = _line_end(text, end)
        rest = text[end:last].strip(" \t\r")
        if rest.startswith(";"):
            rest = rest[1:].strip(" \t\r")
        if rest and not rest.startswith("#"):
            raise ConfError(f"only one assignment per line is supported (found {rest!r})", line)
        assignments.append(
            {
                "name": m.group(2),
                "export": bool(m.group(1)),
                "value": value,
                "expansion": expansion,
                "bare": bare,
                "start": pos,
                "value_start": m.end(),
                "value_end": end,
                "end": last,
                "line": line,
            }
        )
        line += text.count("\n", pos, last) + 1
        pos = last + 1
    return assignments


def shell_values(assignments):
    settings = {}
    for assignment in assignments:
        settings[assignment["name"]] = assignment["value"]
    return {"settings": settings, "sections": {}}


def read_values(content, fmt="one"):
    """The parsed file as {'settings': {...}, 'sections': {...}}."""
    if fmt == "shell":
        return shell_values(parse_shell(content))
    return one_values(parse_one(content))
