"""Checks of what the operator typed, made before Ansible starts: each raises ``KvmprepError``
with one line naming the input and what is wrong with it (exit status 1, nothing changed).

Ansible either hangs, prints a traceback or silently widens the run on these inputs (a huge
``serial``, an empty ``--limit``, a FIFO as inventory, a path that is not UTF-8), so they are
refused here rather than explained afterwards.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kvmprep.exitcodes import KvmprepError

#: More hosts than any batch could hold; Ansible computes its batches from this number.
MAX_BATCH = 100_000
#: Deeper than any real variable file; Ansible's templating recurses once per level.
MAX_DEPTH = 100
#: Files and directories walked under one inventory directory before giving up on the check.
_MAX_INVENTORY_ENTRIES = 10_000

_URL_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "::1"})


def shown(text: str | os.PathLike[str]) -> str:
    """``text`` printable on one line: bytes that are not UTF-8 (kept by Python as surrogates)
    become ``\\xNN``, control characters their escapes."""
    raw = os.fsencode(text)
    decoded = raw.decode("utf-8", "backslashreplace")
    return "".join(
        ch if ch.isprintable() or ch == "\\" else ch.encode("unicode_escape").decode("ascii")
        for ch in decoded
    )


def utf8_path(value: str, what: str) -> None:
    """Ansible and ansible-runner write paths into UTF-8 JSON: refuse any other bytes."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise KvmprepError(f"{what} {shown(value)}: the path is not valid UTF-8") from None


def batch_sizes(value: Any, what: str) -> str | list[str]:
    """Ansible's ``serial``: a host count 1..MAX_BATCH, a share 1%..100%, or a list of them
    (a comma-separated string, or a YAML list from ``-e``). Returned as Ansible takes it."""
    items = value if isinstance(value, list) else str(value).split(",")
    if isinstance(value, bool) or not items:
        raise KvmprepError(f"{what}: expected a host count N or a share N% (1-100)")
    checked = [_batch_item(item, what) for item in items]
    return checked if isinstance(value, list) or len(checked) > 1 else checked[0]


def _batch_item(item: Any, what: str) -> str:
    text = str(item).strip()
    match = re.fullmatch(r"([0-9]+)(%?)", text)
    reason = None
    if isinstance(item, bool) or not match:
        reason = "not a host count N or a share N%"
    else:
        # int() of thousands of digits is slow: any long number is out of range anyway.
        number = int(match[1]) if len(match[1]) <= 7 else MAX_BATCH + 1
        if match[2] and not 1 <= number <= 100:
            reason = "a share must be 1%-100%"
        elif not match[2] and not 1 <= number <= MAX_BATCH:
            reason = f"a host count must be 1-{MAX_BATCH}"
    if reason:
        raise KvmprepError(f"{what}: {shown(text)[:40]!r}: {reason}")
    return text


def percentage(value: Any, what: str) -> int:
    """Ansible's ``max_fail_percentage``: a whole number 0..100."""
    text = str(value).strip()
    if isinstance(value, bool) or not re.fullmatch(r"[0-9]{1,3}", text) or int(text) > 100:
        raise KvmprepError(f"{what}: {shown(text)!r} is not a percentage 0-100")
    return int(text)


def host_pattern(value: str) -> str:
    """An Ansible host pattern Ansible can parse: not empty, brackets balanced, regexes valid."""
    if not value.strip():
        raise KvmprepError("empty --limit: it would match every host; name the hosts or groups")
    if any(not ch.isprintable() for ch in value):
        raise KvmprepError(f"--limit {shown(value)!r}: control characters in a host pattern")
    for term in value.split(","):
        _pattern_term(term.strip(), value)
    return value


def _pattern_term(term: str, whole: str) -> None:
    body = term.lstrip("&!")
    if body.startswith("~"):
        try:
            re.compile(body[1:])
        except re.error as exc:
            raise KvmprepError(
                f"--limit {whole!r}: not a valid regular expression: {exc}"
            ) from None
        return
    depth = 0
    for ch in body:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if not 0 <= depth <= 1:
            raise KvmprepError(
                f"--limit {whole!r}: unbalanced '[' ']' (a range is name[0:3], a class [ab])"
            )
    if depth:
        raise KvmprepError(
            f"--limit {whole!r}: unbalanced '[' ']' (a range is name[0:3], a class [ab])"
        )


def inventory_path(value: str) -> Path:
    """An inventory Ansible can read without blocking: a regular file, or a directory of them."""
    utf8_path(value, "inventory")
    path = Path(value).expanduser()
    try:
        exists = path.exists()
    except PermissionError:  # a directory on the way cannot be searched
        raise KvmprepError(f"inventory {shown(value)}: permission denied") from None
    if not exists:
        raise KvmprepError(f"inventory {shown(value)}: no such file or directory")
    _readable_entry(path, f"inventory {shown(value)}")
    if path.is_dir():
        for entry in _walk(path):
            _readable_entry(entry, f"inventory {shown(value)}: {shown(entry)}")
    return path.resolve()


def _readable_entry(path: Path, what: str) -> None:
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise KvmprepError(f"{what}: {exc.strerror}") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        # Ansible would open a FIFO and wait forever, or read a device.
        raise KvmprepError(f"{what}: not a regular file or a directory")
    utf8_path(str(path), what.split(":")[0])
    needed = os.R_OK | (os.X_OK if stat.S_ISDIR(mode) else 0)
    if not os.access(path, needed):
        raise KvmprepError(f"{what}: permission denied")


def _walk(root: Path) -> Iterator[Path]:
    count = 0
    for top, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in (*dirs, *files):
            if name.startswith("."):  # Ansible skips hidden entries
                continue
            count += 1
            if count > _MAX_INVENTORY_ENTRIES:
                return
            yield Path(top) / name


def nesting(data: Any, what: str, limit: int = MAX_DEPTH) -> None:
    """Refuse data nested deeper than ``limit`` levels (checked without recursion)."""
    stack = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise KvmprepError(f"{what}: too deeply nested (more than {limit} levels)")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``."""
    return _URL_USERINFO.sub(r"\1***@", url)


def has_credentials(url: str) -> bool:
    return bool(_URL_USERINFO.match(url.strip()))


def endpoint(url: str, what: str) -> None:
    """Refuse an OpenNebula endpoint that carries credentials, showing it redacted."""
    if has_credentials(url):
        raise KvmprepError(
            f"{what}={shown(redact_url(url.strip()))} holds credentials: they go in ONE_AUTH "
            "(a file holding user:password) or one_frontend_auth (in Ansible Vault), "
            "never in the URL"
        )


def is_cleartext_remote(url: str) -> bool:
    """True for an http:// endpoint on another machine: its session crosses the network."""
    from ipaddress import ip_address
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").lower()
    except ValueError:
        return False
    if parts.scheme != "http" or not host:
        return False
    if host in _LOOPBACK_NAMES:
        return False
    try:
        return not ip_address(host).is_loopback
    except ValueError:
        return True


def one_auth_file(value: str) -> None:
    """$ONE_AUTH names the file holding user:password: say which and why it cannot be read,
    never what it holds."""
    utf8_path(value, "ONE_AUTH")
    path = Path(value).expanduser()
    where = f"ONE_AUTH={shown(value)}"
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise KvmprepError(
            f"{where}: {exc.strerror.lower()} (ONE_AUTH names the file holding user:password)"
        ) from None
    if not stat.S_ISREG(mode):
        raise KvmprepError(f"{where}: not a regular file (it must hold user:password)")
    try:
        with path.open("rb") as stream:
            empty = not stream.read(4096).strip()
    except OSError as exc:
        raise KvmprepError(f"{where}: cannot read it: {exc.strerror.lower()}") from None
    if empty:
        raise KvmprepError(f"{where}: the file is empty (it must hold user:password)")
