"""Exceptions lossatlas raises on purpose, so callers can tell them from bugs."""


class LossatlasError(Exception):
    """Base class: something the user asked for cannot be done as asked."""


class StoreError(LossatlasError):
    """The store file is missing, corrupt, of another schema, locked, or would be contradicted."""


class ConfigError(LossatlasError, ValueError):
    """A config, method name or parameter is unknown or out of range."""


class DataError(LossatlasError):
    """A dataset is missing or malformed."""


class NonFiniteLossError(LossatlasError, FloatingPointError):
    """A loss evaluated to NaN or inf where a finite value is required."""


class ExportError(LossatlasError):
    """An export cannot be written where asked; the earlier export there is left intact."""
