"""Errors meant for people: the CLI prints them as one line (no traceback unless --debug) and exits non-zero."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or a state the user must fix; the message is the whole story."""

    exit_code = 2


class JournalError(UserError):
    """The journal cannot be used as it is (corrupt, locked, newer schema). Never reset silently."""

    exit_code = 3


class EngineNotRunning(UserError):
    """No engine answers for this TRADEBAAS_HOME."""

    exit_code = 4
