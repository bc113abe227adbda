"""Error types. Every error a user can fix (bad input, missing data) is a `UserError`:
the CLI prints its message and exits with code 2. Anything else is a failure (exit 1)."""


class NeuroplastError(Exception):
    """Base class of all neuroplast errors."""


class UserError(NeuroplastError, ValueError):
    """Bad input the user can fix: unknown names, wrong shapes, missing or corrupt files."""


class DataError(UserError):
    """A data set file is missing, has the wrong size, or is corrupt."""


class SpecError(UserError):
    """A network string, task file or option does not parse or does not fit the data."""


class MetaFolderError(UserError):
    """meta-train's --out folder cannot take the run as asked; the message's advice names meta-train's
    --resume/--overwrite (meta-bench, which meta-trains without those flags, says where they go)."""


class TrainingDiverged(NeuroplastError, RuntimeError):
    """Training produced a non-finite loss (exit code 1)."""


class Interrupted(NeuroplastError):
    """The run was stopped by a signal (SIGTERM); raised so that cleanup code runs (exit code 1)."""
