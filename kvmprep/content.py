"""Locate the Ansible content (playbooks, roles, example inventory) that kvmprep runs.

A wheel carries it inside the package (``kvmprep/_content``, see ``force-include`` in
pyproject.toml); a source checkout or an editable install has it at the repository root,
next to the package directory. Nothing here guesses install prefixes.
"""

from importlib.resources import files
from pathlib import Path

from kvmprep.exitcodes import ExitStatus, KvmprepError

# The file that proves a directory is kvmprep's content root, not some other playbooks/.
_MARKER = Path("playbooks") / "apply.yml"


def content_root() -> Path:
    """Return the directory holding ``playbooks/``, ``roles/`` and ``inventory/``."""
    package = files("kvmprep")
    # Ansible needs real files; a zipped install would give a Traversable that is not a Path.
    if isinstance(package, Path):
        candidates = (package / "_content", package.parent)
        for candidate in candidates:
            if (candidate / _MARKER).is_file():
                return candidate
        searched = ", ".join(str(c) for c in candidates)
    else:
        searched = f"{package} (not a directory on disk)"
    raise KvmprepError(
        f"kvmprep's Ansible content ({_MARKER}) was not found in {searched}; "
        "reinstall kvmprep from a wheel or run it from a complete source checkout",
        ExitStatus.USAGE,
    )


def playbook(name: str) -> Path:
    """Return the absolute path of ``playbooks/<name>.yml``."""
    path = content_root() / "playbooks" / f"{name}.yml"
    if not path.is_file():
        raise KvmprepError(f"playbook {name!r} not found at {path}", ExitStatus.USAGE)
    return path


def roles_path() -> Path:
    """Return the directory Ansible should search for kvmprep's roles."""
    return content_root() / "roles"


def library_path() -> Path:
    """Return the directory holding kvmprep's Ansible modules (kvm_host_probe, ...)."""
    return content_root() / "roles" / "kvm_host" / "library"


#: The roles whose modules and module_utils the check playbook uses without loading the role.
_ROLES = ("kvm_host", "one_frontend")


def library_paths() -> list[Path]:
    """The library directories of kvmprep's roles, kvm_host's first."""
    return [content_root() / "roles" / role / "library" for role in _ROLES]


def module_utils_paths() -> list[Path]:
    """The module_utils directories of kvmprep's roles (shared code of their modules)."""
    return [content_root() / "roles" / role / "module_utils" for role in _ROLES]


def action_plugin_paths() -> list[Path]:
    """The action plugin directories of kvmprep's roles that have one (kvm_host_settings and
    kvm_host_warn run on the controller only), for playbooks that call those modules without
    loading the role."""
    paths = [content_root() / "roles" / role / "action_plugins" for role in _ROLES]
    return [path for path in paths if path.is_dir()]


def inventory_plugin_paths() -> list[Path]:
    """The directory of kvmprep's inventory plugins (opennebula_hosts), where the collection
    has them: ``plugins/inventory`` at the content root."""
    return [content_root() / "plugins" / "inventory"]
