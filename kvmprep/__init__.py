"""kvmprep: prepare Linux hosts as OpenNebula KVM hypervisors with Ansible."""

from typing import Any

__all__ = ["__version__"]


def __getattr__(name: str) -> Any:
    # Looked up on first use only: importlib.metadata is most of `kvmprep --help`'s start-up.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("kvmprep")
        except PackageNotFoundError:  # a source checkout that was never installed
            return "0.0.0+unknown"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
