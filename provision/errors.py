"""Typed exceptions of the library; only the CLI turns them into messages and exit codes."""

from __future__ import annotations


class ProvisionError(Exception):
    """Base class: an expected failure with a one-line, user-facing message."""

    exit_code = 1


class SpecError(ProvisionError):
    """The lab file or the command's arguments are wrong (exit 3).

    The message names the key path, e.g. ``lab.vms[1].nics[0].queues``.
    """

    exit_code = 3

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class HostError(ProvisionError):
    """The host cannot do what was asked, or a daemon is unreachable (exit 4).

    The message says which daemon or device, and how to fix it.
    """

    exit_code = 4


class OperationError(ProvisionError):
    """An operation on the host failed (exit 1)."""

    exit_code = 1
