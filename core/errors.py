"""User-facing errors: one clear line, naming the bad thing and what is allowed."""

__all__ = ["PrunehwError", "ConfigError", "DataError", "ModelFileError"]


class PrunehwError(Exception):
    """A user error. The CLI prints ``error: <message>`` and exits non-zero, no traceback."""


class ConfigError(PrunehwError):
    """A configuration value is unknown, of the wrong type or out of range."""


class DataError(PrunehwError):
    """A data set file is missing, corrupt or malformed."""


class ModelFileError(PrunehwError):
    """A model file is missing, corrupt, or holds unusable weights (NaN/inf)."""
