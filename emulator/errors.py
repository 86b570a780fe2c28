"""The one base of every error a user can fix.

Each module raises its own subclass with a message that names the cause and the fix;
`smrl-local` prints such an error on one line (its traceback only with ``--verbose``) and
lets any other exception, a bug, show its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem in the input, the machine or the job that the message says how to fix."""


class ModelNotFoundError(UserError, FileNotFoundError):
    """There is no model archive where one was expected; the message says how to make one."""
