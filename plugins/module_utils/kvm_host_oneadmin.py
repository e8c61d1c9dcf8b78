"""oneadmin's side of OpenNebula on a machine (a host or the front-end), read-only.

Shared by kvm_host_probe (group C(one), on the hosts), one_frontend_probe (the front-end) and
one_frontend_ssh: the SSH identity oneadmin and the machine present to each other, what
oneadmin trusts (authorized_keys, known_hosts), and a digest of a remotes tree (what
`onehost sync` copies from the front-end to the hosts). Runs on the target's python3 (3.6 or
later), standard library only; nothing here writes, and
oneadmin's files are read without following a link (kvm_host_safepath).
"""

import fnmatch
import glob
import hashlib
import ipaddress
import os
import pwd
import re
import socket
import stat

from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_safepath import (
    UnsafePath,
    read_file,
)

# OpenSSH's default identity files, in the order ssh tries them.
IDENTITY_FILES = ("id_rsa", "id_ecdsa", "id_ed25519")
HOST_KEYS_GLOB = "/etc/ssh/ssh_host_*_key.pub"
#: Paths of a tree not owned by its user that are reported by name (the rest are counted).
FOREIGN_SHOWN = 5
_KEY_TYPES = ("ssh-", "ecdsa-", "sk-")
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,3}$")
# A public key file is one line: an RSA 16384-bit key is under 3 KiB.
KEY_FILE_LIMIT = 16 * 1024
# What a remotes tree holds that is not the front-end's drivers: Ansible's backup of an edited
# file (kvmrc.<pid>.<date>~), Python's caches, and the state OpenNebula's kvm monitoring probes
# keep on each host (im/status_kvm_<host id>.db, with SQLite's -journal/-wal files beside it). The
# remotes copy neither sends nor deletes them
# (one_frontend's __one_frontend_rsync_excludes, kept equal by a unit test) and the digest leaves
# them out, so a converged host is one whose drivers match the front-end's.
REMOTES_LOCAL_NAMES = ("*~",)
REMOTES_LOCAL_DIRS = ("__pycache__",)
REMOTES_LOCAL_PATHS = ("im/status_*.db*",)


def _errtext(exc):
    return exc.strerror or str(exc)


def read_key_line(path, owners=(0,)):
    """The "type base64" part of a public key file, without its comment.

    Root reads it and copies it to every machine: the file is opened without following a link
    (kvm_host_safepath), must be a small regular file owned by one of owners (uids), and must
    look like a public key, else ValueError says why.
    """
    found = read_file(path, limit=KEY_FILE_LIMIT, owners=owners)
    if found is None:
        raise UnsafePath("{0} does not exist".format(path))
    fields = found[0].decode("ascii", "replace").split()
    if len(fields) < 2 or not fields[0].startswith(_KEY_TYPES) or not _BASE64.match(fields[1]):
        raise UnsafePath("{0} is not a public key (no key type and base64 key)".format(path))
    if any(ord(ch) < 33 or ord(ch) > 126 for ch in fields[0]):
        raise UnsafePath("{0} is not a public key (key type {1!r})".format(path, fields[0]))
    return "{0} {1}".format(fields[0], fields[1])


def existing_identity(ssh_dir):
    for name in IDENTITY_FILES:
        private = os.path.join(ssh_dir, name)
        if os.path.exists(private) and os.path.exists(private + ".pub"):
            return private
    return None


def host_keys(pattern=HOST_KEYS_GLOB):
    keys = []
    for path in sorted(glob.glob(pattern)):
        try:
            keys.append(read_key_line(path))
        except (OSError, ValueError):
            continue  # an unreadable or broken host key is not one ssh offers either
    return keys


def interface_addresses(run):
    """Non-loopback addresses, from `ip -o addr` (no third-party library on the target)."""
    rc, out, _err = run(["ip", "-o", "addr", "show"])
    if rc != 0:
        return []
    found = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[2] not in ("inet", "inet6"):
            continue
        try:
            address = ipaddress.ip_interface(fields[3]).ip
        except ValueError:
            continue
        if address.is_loopback or address.is_link_local:
            continue
        if str(address) not in found:
            found.append(str(address))
    return found


def machine_names():
    names = []
    for name in (socket.gethostname(), socket.getfqdn()):
        for candidate in (name, name.split(".")[0]):
            if candidate and candidate != "localhost" and candidate not in names:
                names.append(candidate)
    return names


def _key_at(fields, i):
    """ "type base64" when fields[i] is a key type followed by its base64, else None."""
    if i + 1 < len(fields) and fields[i].startswith(_KEY_TYPES):
        return "{0} {1}".format(fields[i], fields[i + 1])
    return None


def _split_options(line):
    """The fields of an authorized_keys line; a quoted option may hold blanks."""
    fields, current, quoted = [], [], False
    for ch in line:
        if ch == '"':
            quoted = not quoted
        if ch in " \t" and not quoted:
            if current:
                fields.append("".join(current))
                current = []
            continue
        current.append(ch)
    if current:
        fields.append("".join(current))
    return fields


def parse_authorized_keys(text):
    """The keys ("type base64") of an authorized_keys file, options and comments left out."""
    keys = []
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = _split_options(line)
        key = _key_at(fields, 0) or _key_at(fields, 1)  # [options] type base64 [comment]
        if key and key not in keys:
            keys.append(key)
    return keys


def parse_known_hosts(text):
    """known_hosts entries: patterns (as written: names, [name]:port, |1|salt|hash), the key
    ("type base64") and the marker (@revoked, @cert-authority) or None."""
    entries = []
    for line in (text or "").splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        marker = None
        if fields[0].startswith("@"):
            marker, fields = fields[0], fields[1:]
        key = _key_at(fields, 1)
        if key is None:
            continue
        entries.append({"patterns": fields[0].split(","), "key": key, "marker": marker})
    return entries


def _read_file(path, errors):
    """The text of one of oneadmin's files, read as root without following a link it planted;
    a missing file is an empty list, not an error."""
    try:
        found = read_file(path)
    except UnsafePath as exc:
        errors.append("cannot read {0}: {1}".format(path, exc))
        return None
    except OSError as exc:
        errors.append("cannot read {0}: {1}".format(path, _errtext(exc)))
        return None
    return "" if found is None else found[0].decode("utf-8", "replace")


def ssh_state(user, run):
    """What oneadmin's SSH trust is made of on this machine (read-only).

    public_key: the key the user authenticates with (None: no key pair); authorized_keys and
    known_hosts: their entries (None when unreadable); host_keys, names and addresses: how the
    machine presents itself to others (the shape one_frontend_ssh returns).
    """
    res = {
        "user": user,
        "public_key": None,
        "key_file": None,
        "authorized_keys": None,
        "known_hosts": None,
        "host_keys": host_keys(),
        "names": machine_names(),
        "addresses": interface_addresses(run),
        "errors": [],
    }
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        res["errors"].append("user {0} does not exist".format(user))
        return res
    ssh_dir = os.path.join(account.pw_dir, ".ssh")
    key_file = existing_identity(ssh_dir)
    if key_file is not None:
        res["key_file"] = key_file
        try:
            res["public_key"] = read_key_line(key_file + ".pub", owners=(0, account.pw_uid))
        except (OSError, ValueError) as exc:
            res["errors"].append("cannot read {0}.pub: {1}".format(key_file, exc))
    text = _read_file(os.path.join(ssh_dir, "authorized_keys"), res["errors"])
    if text is not None:
        res["authorized_keys"] = parse_authorized_keys(text)
    text = _read_file(os.path.join(ssh_dir, "known_hosts"), res["errors"])
    if text is not None:
        res["known_hosts"] = parse_known_hosts(text)
    return res


def _owner(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def remotes_digest(path, user):
    """The remotes tree at path as `onehost sync` compares it: VERSION, and the sha256 of every
    file by relative path (links followed, as rsync -L copies them), with one tree hash over
    them; plus its owner and the paths in it that user does not own."""
    res = {
        "path": path,
        "exists": False,
        "owner": None,
        "mode": None,
        "version": None,
        "tree": None,
        "files": {},
        "foreign": [],
        "foreign_count": 0,
        "error": None,
    }
    try:
        st = os.stat(path)
    except OSError as exc:
        res["error"] = _errtext(exc)
        return res
    res.update(exists=True, owner=_owner(st.st_uid), mode="%04o" % stat.S_IMODE(st.st_mode))
    if not stat.S_ISDIR(st.st_mode):
        res["error"] = "not a directory"
        return res
    problems = []
    seen = set()
    for top, dirs, names in os.walk(path, followlinks=True, onerror=problems.append):
        real = os.path.realpath(top)
        if real in seen:  # a link back up the tree
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if d not in REMOTES_LOCAL_DIRS)
        for name in [*dirs, *sorted(names)]:
            full = os.path.join(top, name)
            rel = os.path.relpath(full, path)
            if name not in dirs and remotes_local(rel):
                continue
            try:
                lst = os.lstat(full)
                if _owner(lst.st_uid) != user:
                    res["foreign_count"] += 1
                    if len(res["foreign"]) < FOREIGN_SHOWN:
                        res["foreign"].append(rel)
                if name in dirs or not stat.S_ISREG(os.stat(full).st_mode):
                    continue
                res["files"][rel] = _sha256(full)
            except OSError as exc:
                problems.append(exc)
    if problems:
        res["error"] = "; ".join(
            "{0}: {1}".format(getattr(p, "filename", "") or path, _errtext(p)) for p in problems[:3]
        )
    version = res["files"].get("VERSION")
    if version is not None:
        try:
            with open(os.path.join(path, "VERSION")) as handle:
                res["version"] = handle.read().strip() or None
        except OSError:
            pass
    res["tree"] = tree_hash(res["files"])
    return res


def remotes_local(rel):
    """Whether the file at rel (relative to a remotes tree) is local state, not a driver."""
    name = os.path.basename(rel)
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in REMOTES_LOCAL_NAMES) or any(
        fnmatch.fnmatchcase(rel, pattern) for pattern in REMOTES_LOCAL_PATHS
    )


def tree_hash(files):
    """One sha256 over the sorted (relative path, file sha256) pairs of a tree."""
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update("{0}\0{1}\n".format(rel, files[rel]).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()
