"""The exit-code contract of every kvmprep subcommand, and the error that carries one."""

from enum import IntEnum


class ExitStatus(IntEnum):
    """Process exit status; the same for every subcommand, documented in ``--help``.

    When one run has both a failed host and an unreachable one, the result is ``FAILED``:
    a known failure (a task that ran and said why) is the more actionable signal, and the
    unreachable host is still named in the summary. ``UNREACHABLE`` is returned only when
    some host could not be reached and no host failed.
    """

    OK = 0
    #: Usage or input error (bad option, missing inventory, playbook syntax, no host matched).
    #: Nothing was changed on any host.
    USAGE = 1
    #: A host failed during ``apply`` (or, for ``check``, a control is non-compliant).
    FAILED = 2
    #: A host could not be reached (and no host failed).
    UNREACHABLE = 3
    #: Interrupted by the user (SIGINT/SIGTERM); hosts may be partially changed.
    INTERRUPTED = 130

    @classmethod
    def for_hosts(cls, *, any_failed: bool, any_unreachable: bool) -> "ExitStatus":
        """Apply the precedence documented above to the outcome of a run."""
        if any_failed:
            return cls.FAILED
        if any_unreachable:
            return cls.UNREACHABLE
        return cls.OK


class KvmprepError(Exception):
    """A known error: reported as one ``kvmprep: error: ...`` line, without a traceback."""

    def __init__(self, message: str, exit_status: ExitStatus = ExitStatus.USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_status = exit_status
