"""The small error hierarchy every layer raises; the CLI and server render these as one line."""


class TuneforgeError(Exception):
    """Base of all errors a user can cause and fix; the message says what to do next."""


class UserError(TuneforgeError):
    """Bad input from the user: a file, a flag, a value."""


class NotFound(TuneforgeError):
    """A named thing (model, file, adapter) does not exist."""


class ConfigError(TuneforgeError):
    """The environment or a configuration is not usable as it stands."""
