"""Locate the Ansible collection kvmprep.kvm (playbooks, roles, plugins) that kvmprep runs.

The repository root is the collection. A wheel carries it as ``ansible_collections/kvmprep/kvm``
at the top of site-packages (``force-include`` in pyproject.toml), where the ``ansible`` PyPI
package ships its collections too: Python imports it from there and Ansible finds it there by
itself (COLLECTIONS_SCAN_SYS_PATH). A source checkout or an editable install has it at the
repository root, next to the package directory; neither Python nor Ansible finds a collection
that is not ``ansible_collections/<namespace>/<name>`` below a directory on their path, so
``collections_dir()`` gives the checkout that shape with a symbolic link
(``.ansible/collections/ansible_collections/kvmprep/kvm``, ignored by git).
Nothing here guesses install prefixes, and nothing imports Ansible (``kvmprep --help`` stays
fast).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
from functools import cache
from importlib.resources import files
from pathlib import Path

from kvmprep.exitcodes import ExitStatus, KvmprepError

NAMESPACE = "kvmprep"
NAME = "kvm"
#: The collection's name, as playbooks name its content (kvmprep.kvm.kvm_host_probe).
FQCN = f"{NAMESPACE}.{NAME}"
#: Where a collection sits below a directory of ANSIBLE_COLLECTIONS_PATH or sys.path.
_SHAPE = ("ansible_collections", NAMESPACE, NAME)
# The files that prove a directory is kvmprep's collection, not some other playbooks/.
_MARKERS = (Path("playbooks") / "apply.yml", Path("meta") / "runtime.yml")


def _is_collection(path: Path) -> bool:
    return all((path / marker).is_file() for marker in _MARKERS)


def content_root() -> Path:
    """Return the collection's root: ``playbooks/``, ``roles/``, ``plugins/``, ``meta/``."""
    package = files("kvmprep")
    # Ansible needs real files; a zipped install would give a Traversable that is not a Path.
    if isinstance(package, Path):
        # A wheel's copy first, then the source checkout's root (an editable install).
        candidates = (package.parent.joinpath(*_SHAPE), package.parent)
        for candidate in candidates:
            if _is_collection(candidate):
                return candidate
        searched = ", ".join(str(c) for c in candidates)
    else:
        searched = f"{package} (not a directory on disk)"
    raise KvmprepError(
        f"kvmprep's Ansible collection ({' and '.join(map(str, _MARKERS))}) was not found in "
        f"{searched}; reinstall kvmprep from a wheel or run it from a complete source checkout",
        ExitStatus.USAGE,
    )


def _link_homes(root: Path) -> tuple[Path, ...]:
    """Where a checkout's ``ansible_collections`` link may be made, in order: the checkout's own
    ``.ansible/collections`` (known in advance to molecule.yml and the scripts, and the place
    where ansible-lint and molecule, through ansible-compat, look for the local collection: they
    use the link instead of building a copy), then the user's cache, then the temp dir (a
    read-only checkout and home)."""
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return (
        root / ".ansible" / "collections",
        Path(cache_home) / "kvmprep" / "collections" / digest,
        Path(tempfile.gettempdir()) / f"kvmprep-{os.getuid()}" / "collections" / digest,
    )


def _installed_copy(path: Path) -> bool:
    """Whether ``path`` is this collection as ansible-galaxy installs it (MANIFEST.json)."""
    if path.is_symlink() or not path.is_dir():
        return False
    try:
        info = json.loads((path / "MANIFEST.json").read_text(encoding="utf-8"))["collection_info"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return (info.get("namespace"), info.get("name")) == (NAMESPACE, NAME)


@cache
def collections_dir() -> Path:
    """A directory D where ``D/ansible_collections/kvmprep/kvm`` is ``content_root()``: what
    kvmprep puts first on ANSIBLE_COLLECTIONS_PATH and on sys.path.

    An installed wheel's site-packages is such a directory already. A source checkout gets a
    symbolic link ``.ansible/collections/ansible_collections/kvmprep/kvm -> checkout`` (see
    ``_link_homes``), made once, replaced when it points elsewhere (a moved checkout). A link,
    not a copy: an edit of the checkout is what the next run runs.
    """
    root = content_root()
    if root.parts[-len(_SHAPE) :] == _SHAPE:
        return root.parents[len(_SHAPE) - 1]
    homes = _link_homes(root)
    for top in homes:
        link = top.joinpath(*_SHAPE)
        staged = link.with_name(f".{NAME}.{os.getpid()}")
        try:
            if link.is_symlink() and link.readlink() == root:
                return top
            link.parent.mkdir(parents=True, exist_ok=True)
            if _installed_copy(link):
                # ansible-lint's and molecule's prerun (ansible-compat) install a copy of the
                # local collection there when they find no link: a stale snapshot of the
                # checkout, which the link replaces (they take the link from then on).
                shutil.rmtree(link)
            # Made under another name and renamed over the link: two runs starting at once
            # both succeed and neither sees a half-made link. Another directory there is left
            # alone: the next place is used.
            staged.unlink(missing_ok=True)
            staged.symlink_to(root, target_is_directory=True)
            staged.replace(link)
        except OSError:
            with contextlib.suppress(OSError):
                staged.unlink(missing_ok=True)
            continue
        return top
    raise KvmprepError(
        f"cannot link the collection {FQCN} ({root}) into any of {', '.join(map(str, homes))}",
        ExitStatus.USAGE,
    )


def import_collection() -> None:
    """Make ``ansible_collections.kvmprep.kvm`` importable in this process (the judge and the
    machine types are imported from the collection: kvmprep depends on it, never the reverse).
    Python then finds the collection as a namespace package below ``collections_dir()``."""
    directory = str(collections_dir())
    # First: a namespace package takes its portions in sys.path order, and another copy of
    # the collection (a wheel installed in the same venv as a checkout) must not win.
    if directory not in sys.path:
        sys.path.insert(0, directory)


def playbook(name: str) -> Path:
    """Return the absolute path of ``playbooks/<name>.yml``."""
    path = content_root() / "playbooks" / f"{name}.yml"
    if not path.is_file():
        raise KvmprepError(f"playbook {name!r} not found at {path}", ExitStatus.USAGE)
    return path


def roles_path() -> Path:
    """Return the directory of the collection's roles (their files: defaults, argument_specs)."""
    return content_root() / "roles"


def plugin_path(kind: str) -> Path:
    """Return ``plugins/<kind>`` of the collection (modules, module_utils, action, ...)."""
    return content_root() / "plugins" / kind


def inventory_plugin_paths() -> list[Path]:
    """The directory of kvmprep's inventory plugins (opennebula_hosts), where the collection
    has them: ``plugins/inventory`` at the content root."""
    return [plugin_path("inventory")]
