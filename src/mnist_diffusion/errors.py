"""Errors a user can act on. The CLI prints their message as one sentence and exits non-zero."""


class UserError(Exception):
    """Bad input: a file, key or value that is wrong; the message names it and says what would be right."""


class DataError(UserError):
    """Data that cannot be found, read or trusted."""


class CheckpointError(UserError):
    """A checkpoint or run directory that is missing, corrupt or of another kind."""


class OutputError(UserError):
    """An output path that cannot be written; the message names it and says why."""
