#!/usr/bin/python
"""kvm_host_files: several small files, directories and links ensured in one module call."""

# Ansible module conventions: the documentation strings come before the imports, and os.path is
# used throughout (the code runs on the target's python3, standard library only).
DOCUMENTATION = r"""
---
module: kvm_host_files
short_description: Ensure directories, small files with given content, and symlinks, in one call
description:
  - Does for each entry of I(files), in order, what M(ansible.builtin.file) (C(state=directory),
    C(state=link)) or M(ansible.builtin.copy) with C(content) does, in a single round trip to
    the host instead of one per entry for M(ansible.builtin.file) and two for
    M(ansible.builtin.copy) (a stat, then the attributes).
  - A file's content is replaced atomically (temporary file in the same directory, then rename)
    when it differs, after I(validate) accepted the temporary file; I(backup) keeps the previous
    version. Owner, group and mode are then applied as M(ansible.builtin.file) applies them.
  - A missing directory is created with its missing parents, each getting the entry's owner,
    group and mode (as M(ansible.builtin.file) does). A link is created or re-pointed; a path
    that exists and is not a link is an error (nothing is replaced by force).
  - Root never follows a link that another account could have planted. Every path is opened one
    component at a time from C(/) without following links, except a link only root controls
    (owned by root, in a directory of root's that nobody else may write, such as C(/var/run)).
    A link where a file or directory is expected, a file with several hard links in a directory
    not owned by root, or an existing path owned by a third account (neither root nor I(owner))
    is refused, naming the path. Files are replaced by a rename in the directory held open, and
    owner and mode are set on an open file, never by path.
  - Check mode changes nothing and reports what would change; each change is described in the
    result's diff (content before/after, attributes before/after), as the built-in modules do.
  - The entries are processed in order, so a directory listed before a file in it is there when
    the file is written. The first entry that fails stops the call; the entries before it stay
    done. I(secret_files) come after I(files).
  - I(secret_files) are files whose content is a secret (a password, a private key). Their content
    is a no_log value (Ansible masks it wherever it would appear), and a change to one is
    reported without its content, before or after (the diff says that it changed, and the
    attributes), so the task need not be C(no_log) as a whole, and the other entries keep their
    diff.
  - With I(snapshot), the paths it names are saved first, before any entry is done, to roll back
    a failed restart (see M(kvmprep.kvm.kvm_host_snapshot), C(state=saved)), in the same round
    trip.
version_added: "0.1.0"
author:
  - kvmprep maintainers (!UNKNOWN)
options:
  files:
    description: What to ensure, in order.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path of the file, directory or link.
        type: path
        required: true
      state:
        description: C(file) (with I(content)), C(directory) or C(link) (to I(src)).
        type: str
        choices: [file, directory, link]
        default: file
      content:
        description: The whole content of the file (C(state=file)).
        type: str
      src:
        description: Target of the link (C(state=link)), not followed or checked.
        type: str
      owner:
        description: Owner (name or uid); unchanged when omitted.
        type: str
      group:
        description: Group (name or gid); unchanged when omitted.
        type: str
      mode:
        description: Mode, as an octal string such as C("0644"); not applied to links.
        type: str
      backup:
        description:
          - Keep a copy of a file whose content is replaced, beside it, named as Ansible's
            backups are (C(NAME.PID.YYYY-MM-DD@HH:MM:SS~)).
        type: bool
        default: false
      recurse:
        description:
          - C(state=directory) only, with I(owner) and I(group). Also give everything under the
            directory to I(owner) and I(group), as M(ansible.builtin.file) C(recurse) does, but
            without following any link (a link itself gets the owner), without leaving the
            directory's file system, and refusing a hard-linked file or a special file.
        type: bool
        default: false
      validate:
        description:
          - Command run on the temporary file before it replaces I(path), C(%s) standing for its
            path (as M(ansible.builtin.copy) does); a non-zero exit leaves I(path) untouched.
        type: str
  secret_files:
    description:
      - What to ensure after I(files), in order, for entries whose content is a secret; the
        suboptions are those of I(files), I(content) being no_log, without I(validate) (a
        validating command's output could show the content).
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: As in I(files).
        type: path
        required: true
      state:
        description: As in I(files).
        type: str
        choices: [file, directory, link]
        default: file
      content:
        description: As in I(files); never shown.
        type: str
      src:
        description: As in I(files).
        type: str
      owner:
        description: As in I(files).
        type: str
      group:
        description: As in I(files).
        type: str
      mode:
        description: As in I(files).
        type: str
      backup:
        description: As in I(files).
        type: bool
        default: false
      recurse:
        description: As in I(files).
        type: bool
        default: false
  snapshot:
    description:
      - Paths to save before the first entry (as M(kvmprep.kvm.kvm_host_snapshot) saves them), so
        that a restart that fails later in the run can put them back.
    type: dict
    suboptions:
      paths:
        description: Paths or shell globs to save.
        type: list
        elements: str
        required: true
      dest:
        description: Directory that holds the snapshot, an absolute path.
        type: str
        required: true
      service:
        description:
          - The systemd unit of the daemon that reads these paths; files changed since the
            earlier snapshot that it has not read are returned in I(restart_pending), and that
            snapshot is kept. Empty skips the comparison.
        type: str
        default: ""
extends_documentation_fragment:
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
- name: Install the udev rule for /dev/kvm, and its directory
  kvmprep.kvm.kvm_host_files:
    files:
      - path: /etc/udev/rules.d
        state: directory
        owner: root
        group: root
        mode: "0755"
      - path: /etc/udev/rules.d/65-kvmprep-kvm.rules
        content: |
          KERNEL=="kvm", GROUP="kvm", MODE="0660"
        owner: root
        group: root
        mode: "0644"
"""

RETURN = r"""
files:
  description: Per entry, in order, its path, state, whether it changed, and the backup made.
  returned: always
  type: list
  elements: dict
  sample: [{"path": "/etc/udev/rules.d", "state": "directory", "changed": false}]
  contains:
    recursed:
      description: With I(recurse), the entries under the directory that got (would get) the owner.
      type: int
    skipped:
      description: With I(recurse), directories of another file system, left alone.
      type: list
diff:
  description: One before/after pair per change (content or attributes), headed by the path.
  returned: when something changed (Ansible shows it in diff mode)
  type: list
restart_pending:
  description:
    - With I(snapshot) and its I(service), the files changed since the earlier snapshot that the
      running daemon has not read (an earlier run was interrupted before its restart).
  returned: always (empty without I(snapshot))
  type: list
  elements: str
kvmprep_changes:
  description:
    - What changed (in check mode, would change), one sentence per path, for kvmprep's change
      report; never a file's content.
  returned: always (empty when nothing changed)
  type: list
  elements: dict
  sample: [{"concern": "files", "text": "/dev/kvm mode 0600 -> 0660"}]
"""

import grp
import os
import pwd
import re
import shlex
import stat
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_native, to_text

from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_safepath import (
    UnsafePath,
    check_owner,
    chown_tree,
    copy_as_backup,
    join,
    link_refusal,
    locate,
    make_dirs,
    open_file_at,
    read_fd,
    replace_file,
    replace_link,
    set_attributes,
    walk,
)
from ansible_collections.kvmprep.kvm.plugins.module_utils.kvm_host_snapshot import take

_MODE = re.compile(r"^0?[0-7]{3,4}$")


class EntryError(Exception):
    """An entry that cannot be done; the message names its path."""


def _lookup(value, database, kind, path):
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    try:
        return database(value)[2]
    except KeyError:
        raise EntryError("{0}: no {1} named {2}".format(path, kind, value)) from None


def wanted_ids(entry):
    """(uid, gid, mode) an entry asks for, None for each it leaves as it is."""
    path, mode = entry["path"], entry.get("mode")
    if mode is not None and entry.get("state") != "link":
        if not _MODE.match(mode):
            raise EntryError("{0}: mode {1!r} is not an octal mode such as 0644".format(path, mode))
        mode = int(mode, 8)
    else:
        mode = None
    return (
        _lookup(entry.get("owner"), pwd.getpwnam, "user", path),
        _lookup(entry.get("group"), grp.getgrnam, "group", path),
        mode,
    )


def attribute_diff(path, st, ids):
    """What the owner, group and mode of st would become, as ansible.builtin.file's diff shows it;
    None when nothing differs."""
    uid, gid, mode = ids
    before, after = {"path": path}, {"path": path}
    if uid is not None and st.st_uid != uid:
        before["owner"], after["owner"] = st.st_uid, uid
    if gid is not None and st.st_gid != gid:
        before["group"], after["group"] = st.st_gid, gid
    if mode is not None and stat.S_IMODE(st.st_mode) != mode:
        before["mode"], after["mode"] = "0%03o" % stat.S_IMODE(st.st_mode), "0%03o" % mode
    if len(before) == 1:
        return None
    return {"before_header": path, "after_header": path, "before": before, "after": after}


def _attributes_on_fd(module, fd, path, st, ids, diffs):
    diff = attribute_diff(path, st, ids)
    if diff is None:
        return False
    diffs.append(diff)
    if not module.check_mode:
        set_attributes(fd, *ids)
    return True


def _absent_diff(path, state):
    return {
        "before_header": path,
        "after_header": path,
        "before": {"path": path, "state": "absent"},
        "after": {"path": path, "state": state},
    }


def ensure_directory(module, entry, ids, diffs):
    path = entry["path"]
    fd, parts, rest = walk(path, missing_ok=True)
    try:
        if rest:
            diffs.append(_absent_diff(path, "directory"))
            if module.check_mode:
                return True, {}
            fd, parts = make_dirs(fd, parts, rest, *ids)
            changed = True
        else:
            check_owner(path, os.fstat(fd), ids[0])
            changed = _attributes_on_fd(module, fd, path, os.fstat(fd), ids, diffs)
        extra = {}
        if entry.get("recurse"):
            extra = _recurse(module, fd, parts, entry, ids, diffs)
            changed = changed or extra["recursed"] > 0
        return changed, extra
    finally:
        os.close(fd)


def _recurse(module, fd, parts, entry, ids, diffs):
    path, (uid, gid, _mode) = entry["path"], ids
    if uid is None or gid is None:
        raise EntryError("{0}: recurse needs owner and group".format(path))
    count, skipped = chown_tree(fd, parts, uid, gid, check=module.check_mode)
    if count:
        who = "{0}:{1}".format(entry["owner"], entry["group"])
        diffs.append(
            {
                "before_header": path,
                "after_header": path,
                "before": "{0} entries under {1} not owned by {2}\n".format(count, path, who),
                "after": "everything under {0} owned by {1}\n".format(path, who),
            }
        )
    return {"recursed": count, "skipped": skipped}


def _validator(module, entry, path, shown_dir):
    """What runs on the temporary file before it replaces path: validate, then SELinux's label."""

    def before(tmp):
        tmp_path = os.path.join(shown_dir, tmp)
        if entry.get("validate"):
            argv = shlex.split(entry["validate"] % tmp_path)
            rc, out, err = module.run_command(argv)
            if rc != 0:
                module.fail_json(
                    msg="%s: failed to validate the new content" % path,
                    rc=rc,
                    stdout=out,
                    stderr=err,
                )
        if module.selinux_enabled():
            # As atomic_move labels a replaced file: the old one's context, else the default.
            context = (
                module.selinux_context(path)
                if os.path.lexists(path)
                else module.selinux_default_context(path)
            )
            module.set_context_if_different(tmp_path, context, False)

    return before


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def ensure_file(module, entry, ids, diffs):
    path = entry["path"]
    if entry.get("content") is None:
        raise EntryError("%s: state=file needs content" % path)
    if entry.get("validate") and "%s" not in entry["validate"]:
        raise EntryError("%s: validate must contain %%s" % path)
    wanted = to_bytes(entry["content"], errors="surrogate_or_strict")
    dir_fd, parts, name, st, rest = locate(path)
    try:
        if rest:
            if not module.check_mode:
                raise EntryError(
                    "%s: the directory %s does not exist" % (path, os.path.dirname(path))
                )
            diffs.append(_content_diff(path, b"", wanted))
            return True, {}
        shown = join([*parts, name])
        current, fd = None, None
        if st is not None:
            if stat.S_ISDIR(st.st_mode):
                raise EntryError("%s exists and is a directory" % path)
            if stat.S_ISLNK(st.st_mode):
                raise link_refusal(shown, st)
            check_owner(shown, st, ids[0])
            fd, st = open_file_at(dir_fd, name, shown)
        try:
            if fd is not None:
                current = read_fd(fd)
            if current == wanted:
                return _attributes_on_fd(module, fd, path, st, ids, diffs), {}
            diffs.append(_content_diff(path, current or b"", wanted))
            if st is not None:
                diff = attribute_diff(path, st, ids)
                if diff is not None:
                    diffs.append(diff)
            if module.check_mode:
                return True, {}
            return True, _write(module, entry, ids, dir_fd, parts, name, st, current, wanted)
        finally:
            if fd is not None:
                os.close(fd)
    finally:
        os.close(dir_fd)


def _content_diff(path, before, after):
    return {
        "before_header": path,
        "after_header": path,
        "before": to_text(before, errors="surrogate_or_replace"),
        "after": to_text(after, errors="surrogate_or_replace"),
    }


def _write(module, entry, ids, dir_fd, parts, name, st, current, wanted):
    """Replace the file (its old owner and mode kept where the entry sets none); the backup."""
    uid, gid, mode = ids
    if st is not None:
        uid = st.st_uid if uid is None else uid
        gid = st.st_gid if gid is None else gid
        mode = stat.S_IMODE(st.st_mode) if mode is None else mode
    elif mode is None:
        mode = 0o666 & ~_umask()
    result = {}
    if st is not None and entry.get("backup"):
        stamp = time.strftime("%Y-%m-%d@%H:%M:%S", time.localtime())
        result["backup_file"] = join([*parts, copy_as_backup(dir_fd, name, current, st, stamp)])
    before = _validator(module, entry, entry["path"], join(parts))
    replace_file(dir_fd, name, wanted, uid, gid, mode, before=before)
    return result


def ensure_link(module, entry, ids, diffs):
    path, src = entry["path"], entry.get("src")
    if not src:
        raise EntryError("%s: state=link needs src" % path)
    dir_fd, _parts, rest = walk(os.path.dirname(path), missing_ok=True)
    try:
        name = os.path.basename(path)
        st = None if rest else os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        st = None
    try:
        if rest and not module.check_mode:
            raise EntryError("%s: the directory %s does not exist" % (path, os.path.dirname(path)))
        if st is not None and not stat.S_ISLNK(st.st_mode):
            raise EntryError("%s exists and is not a link: refusing to replace it" % path)
        if st is not None:
            check_owner(path, st, ids[0])
        current = os.readlink(name, dir_fd=dir_fd) if st is not None else None
        changed = current != src
        if changed:
            diffs.append(
                {
                    "before_header": path,
                    "after_header": path,
                    "before": {
                        "path": path,
                        "src": current,
                        "state": "link" if current else "absent",
                    },
                    "after": {"path": path, "src": src, "state": "link"},
                }
            )
            if module.check_mode:
                return True, {}
            replace_link(dir_fd, name, src)
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        diff = attribute_diff(path, st, ids)
        if diff is None:
            return changed, {}
        diffs.append(diff)
        if not module.check_mode:
            uid, gid, _mode = ids
            os.chown(
                name,
                -1 if uid is None else uid,
                -1 if gid is None else gid,
                dir_fd=dir_fd,
                follow_symlinks=False,
            )
        return True, {}
    finally:
        os.close(dir_fd)


_ENSURE = {"directory": ensure_directory, "link": ensure_link, "file": ensure_file}


def _user(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, TypeError):
        return str(uid)


def _group(gid):
    try:
        return grp.getgrgid(gid).gr_name
    except (KeyError, TypeError):
        return str(gid)


def change_sentence(diff):
    """One of this module's diffs as a line of kvmprep's change report (never the content)."""
    path, before, after = diff["before_header"], diff["before"], diff["after"]
    if isinstance(before, str):
        return "%s written" % path
    if before.get("state") == "absent":
        if after.get("state") == "link":
            return "%s linked to %s" % (path, after.get("src"))
        return "%s created" % path
    if "src" in after:
        return "%s linked to %s (was %s)" % (path, after["src"], before.get("src"))
    parts = []
    if "owner" in before:
        parts.append("owner %s -> %s" % (_user(before["owner"]), _user(after["owner"])))
    if "group" in before:
        parts.append("group %s -> %s" % (_group(before["group"]), _group(after["group"])))
    if "mode" in before:
        parts.append("mode %s -> %s" % (before["mode"], after["mode"]))
    return "%s %s" % (path, ", ".join(parts))


def hide_content(diff):
    """A secret file's content diff without the content, before or after."""
    if not isinstance(diff["before"], str):
        return diff
    hidden = dict(diff)
    hidden["before"] = "(a secret: not shown)\n" if diff["before"] else ""
    hidden["after"] = "(a secret, changed: not shown)\n"
    return hidden


def run_entry(module, entry, diffs, secret=False):
    """The result of one entry; every refusal or error fails the module naming the path. A
    secret entry's content diff is replaced by one without the content."""
    path = entry["path"]
    if not os.path.isabs(path):
        module.fail_json(msg="%s: the path must be absolute" % path)
    if entry.get("recurse") and entry["state"] != "directory":
        module.fail_json(msg="%s: recurse is for state=directory" % path)
    first = len(diffs)
    try:
        changed, extra = _ENSURE[entry["state"]](module, entry, wanted_ids(entry), diffs)
    except (EntryError, UnsafePath) as exc:
        module.fail_json(msg=to_native(exc))
    except OSError as exc:
        where = (
            exc.filename if isinstance(exc.filename, str) and exc.filename.startswith("/") else path
        )
        module.fail_json(msg="%s: %s" % (where, exc.strerror or to_native(exc)))
    if secret:
        diffs[first:] = [hide_content(d) for d in diffs[first:]]
    item = {"path": path, "state": entry["state"], "changed": changed}
    item.update(extra)
    # The recursion's diff is a sentence of its own; every other diff is about the path.
    recursed = [diffs.pop()] if extra.get("recursed") else []
    item["kvmprep_changes"] = [change_sentence(d) for d in diffs[first:]]
    if recursed:
        item["kvmprep_changes"].append(
            "%s: %d entries under it given to %s:%s"
            % (path, extra["recursed"], entry["owner"], entry["group"])
        )
    diffs.extend(recursed)
    return item


def entry_options(secret):
    """The suboptions of an entry of files (secret: of secret_files, content no_log and no
    validate, whose output could show the content)."""
    options = {
        "path": {"type": "path", "required": True},
        "state": {
            "type": "str",
            "choices": ["file", "directory", "link"],
            "default": "file",
        },
        "content": {"type": "str", "no_log": secret},
        "src": {"type": "str"},
        "owner": {"type": "str"},
        "group": {"type": "str"},
        "mode": {"type": "str"},
        "backup": {"type": "bool", "default": False},
        "recurse": {"type": "bool", "default": False},
    }
    if not secret:
        options["validate"] = {"type": "str"}
    return options


def main():
    module = AnsibleModule(
        argument_spec={
            "files": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": entry_options(secret=False),
            },
            # The entries are not secret as a whole (their paths, owners and modes are shown);
            # their content is (entry_options).
            "secret_files": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "no_log": False,
                "options": entry_options(secret=True),
            },
            "snapshot": {
                "type": "dict",
                "options": {
                    "paths": {"type": "list", "elements": "str", "required": True},
                    "dest": {"type": "str", "required": True},
                    "service": {"type": "str", "default": ""},
                },
            },
        },
        supports_check_mode=True,
    )
    pending = []
    snapshot = module.params["snapshot"]
    if snapshot:
        try:
            pending, _saved = take(
                snapshot["paths"],
                snapshot["dest"],
                snapshot["service"],
                module.check_mode,
                module.warn,
            )
        except (OSError, ValueError, KeyError) as exc:
            module.fail_json(msg="snapshot {0}: {1}".format(snapshot["dest"], exc))
    diffs = []
    results = [run_entry(module, entry, diffs) for entry in module.params["files"]]
    results.extend(
        run_entry(module, entry, diffs, secret=True) for entry in module.params["secret_files"]
    )
    result = {
        "changed": any(item["changed"] for item in results),
        "files": results,
        "restart_pending": pending,
        "kvmprep_changes": [
            {"concern": "files", "text": text}
            for item in results
            for text in item.pop("kvmprep_changes")
        ],
    }
    # Whatever the diff mode: Ansible shows a result's diff only in diff mode, and a module
    # has no public way to ask for it.
    if diffs:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
