"""Errors a user can fix; the launcher prints them without a traceback."""


class LauncherError(RuntimeError):
    """A problem in the job's configuration (preset, hyperparameters), with its fix."""
