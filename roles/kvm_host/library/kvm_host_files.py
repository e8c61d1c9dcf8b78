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
  - Check mode changes nothing and reports what would change; with diff mode each change is
    described (content before/after, attributes before/after), as the built-in modules do.
  - The entries are processed in order, so a directory listed before a file in it is there when
    the file is written. The first entry that fails stops the call; the entries before it stay
    done.
version_added: "0.1.0"
author:
  - kvmprep
options:
  files:
    description: What to ensure, in order.
    type: list
    elements: dict
    required: true
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
        description: Keep a timestamped copy of a file whose content is replaced.
        type: bool
        default: false
      validate:
        description:
          - Command run on the temporary file before it replaces I(path), C(%s) standing for its
            path (as M(ansible.builtin.copy) does); a non-zero exit leaves I(path) untouched.
        type: str
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
"""

EXAMPLES = r"""
- name: Install the udev rule for /dev/kvm, and its directory
  kvm_host_files:
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
diff:
  description: One before/after pair per change (content or attributes), headed by the path.
  returned: when running with --diff and something changed
  type: list
"""

import os
import shlex
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_native, to_text

_ATTRIBUTES = ("owner", "group", "mode")


def _file_args(module, entry, path):
    params = {
        "path": path,
        "owner": entry.get("owner"),
        "group": entry.get("group"),
        "mode": entry.get("mode") if entry.get("state") != "link" else None,
        "seuser": None,
        "serole": None,
        "selevel": None,
        "setype": None,
        "attributes": None,
    }
    return module.load_file_common_arguments(params, path=path)


def _apply_attributes(module, entry, path, changed, diffs):
    """Owner, group and mode as ansible.builtin.file applies them; one diff entry if changed."""
    if not any(entry.get(key) is not None for key in _ATTRIBUTES):
        return changed
    attr_diff = {"before": {"path": path}, "after": {"path": path}}
    changed = module.set_fs_attributes_if_different(
        _file_args(module, entry, path), changed, diff=attr_diff, expand=False
    )
    if len(attr_diff["before"]) > 1 or len(attr_diff["after"]) > 1:
        attr_diff["before_header"] = attr_diff["after_header"] = path
        diffs.append(attr_diff)
    return changed


def _missing_components(path):
    """The path's components that do not exist, outermost first."""
    missing = []
    current = path
    while current and current != os.sep and not os.path.lexists(current):
        missing.append(current)
        current = os.path.dirname(current)
    return list(reversed(missing))


def ensure_directory(module, entry, diffs):
    path = entry["path"]
    if os.path.lexists(path) and not os.path.isdir(path):
        module.fail_json(msg="%s exists and is not a directory" % path)
    missing = _missing_components(path)
    changed = bool(missing)
    if missing:
        diffs.append(
            {
                "before_header": path,
                "after_header": path,
                "before": {"path": path, "state": "absent"},
                "after": {"path": path, "state": "directory"},
            }
        )
        if module.check_mode:
            return True
        for component in missing:
            try:
                os.mkdir(component)
            except OSError as exc:
                module.fail_json(msg="cannot create %s: %s" % (component, to_native(exc)))
            if component != path:
                module.set_fs_attributes_if_different(
                    _file_args(module, entry, component), True, expand=False
                )
    return _apply_attributes(module, entry, path, changed, diffs)


def _read(path):
    with open(path, "rb") as stream:
        return stream.read()


def ensure_file(module, entry, diffs):
    path = entry["path"]
    if entry.get("content") is None:
        module.fail_json(msg="%s: state=file needs content" % path)
    wanted = to_bytes(entry["content"], errors="surrogate_or_strict")
    exists = os.path.lexists(path)
    if exists and os.path.isdir(path):
        module.fail_json(msg="%s exists and is a directory" % path)
    current = _read(path) if exists else None
    result = {}
    changed = current != wanted
    if changed:
        diffs.append(
            {
                "before_header": path,
                "after_header": path,
                "before": to_text(current or b"", errors="surrogate_or_replace"),
                "after": to_text(wanted, errors="surrogate_or_replace"),
            }
        )
        if module.check_mode:
            return True, result
        directory = os.path.dirname(path)
        if not os.path.isdir(directory):
            module.fail_json(msg="%s: the directory %s does not exist" % (path, directory))
        fd, tmp = tempfile.mkstemp(prefix=".kvmprep-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as stream:
                stream.write(wanted)
            if entry.get("validate"):
                if "%s" not in entry["validate"]:
                    module.fail_json(msg="%s: validate must contain %%s" % path)
                argv = shlex.split(entry["validate"] % tmp)
                rc, out, err = module.run_command(argv)
                if rc != 0:
                    module.fail_json(
                        msg="%s: failed to validate the new content" % path,
                        rc=rc,
                        stdout=out,
                        stderr=err,
                    )
            if exists and entry.get("backup"):
                result["backup_file"] = module.backup_local(path)
            module.atomic_move(tmp, path, unsafe_writes=False)
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)
    return _apply_attributes(module, entry, path, changed, diffs), result


def ensure_link(module, entry, diffs):
    path, src = entry["path"], entry.get("src")
    if not src:
        module.fail_json(msg="%s: state=link needs src" % path)
    if os.path.lexists(path) and not os.path.islink(path):
        module.fail_json(msg="%s exists and is not a link: refusing to replace it" % path)
    current = os.readlink(path) if os.path.islink(path) else None
    changed = current != src
    if changed:
        diffs.append(
            {
                "before_header": path,
                "after_header": path,
                "before": {"path": path, "src": current, "state": "link" if current else "absent"},
                "after": {"path": path, "src": src, "state": "link"},
            }
        )
        if module.check_mode:
            return True
        tmp = os.path.join(os.path.dirname(path), ".kvmprep-link-%d" % os.getpid())
        try:
            os.symlink(src, tmp)
            os.rename(tmp, path)
        except OSError as exc:
            module.fail_json(msg="cannot link %s to %s: %s" % (path, src, to_native(exc)))
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)
    return _apply_attributes(module, entry, path, changed, diffs)


def main():
    module = AnsibleModule(
        argument_spec={
            "files": {
                "type": "list",
                "elements": "dict",
                "required": True,
                "options": {
                    "path": {"type": "path", "required": True},
                    "state": {
                        "type": "str",
                        "choices": ["file", "directory", "link"],
                        "default": "file",
                    },
                    "content": {"type": "str"},
                    "src": {"type": "str"},
                    "owner": {"type": "str"},
                    "group": {"type": "str"},
                    "mode": {"type": "str"},
                    "backup": {"type": "bool", "default": False},
                    "validate": {"type": "str"},
                },
            }
        },
        supports_check_mode=True,
    )
    results = []
    diffs = []
    for entry in module.params["files"]:
        if not os.path.isabs(entry["path"]):
            module.fail_json(msg="%s: the path must be absolute" % entry["path"])
        item = {"path": entry["path"], "state": entry["state"]}
        if entry["state"] == "directory":
            item["changed"] = ensure_directory(module, entry, diffs)
        elif entry["state"] == "link":
            item["changed"] = ensure_link(module, entry, diffs)
        else:
            item["changed"], extra = ensure_file(module, entry, diffs)
            item.update(extra)
        results.append(item)
    result = {"changed": any(item["changed"] for item in results), "files": results}
    if module._diff and diffs:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
