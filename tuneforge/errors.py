"""The small error hierarchy every layer raises; the CLI and server render these as one line."""


class TuneforgeError(Exception):
    """Base of all errors a user can cause and fix; the message says what to do next.

    `param` (the request field at fault) and `code` (a stable machine-readable reason) are optional and
    end up in the API's error object.
    """

    def __init__(self, message: str = "", *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.param = param
        self.code = code


class UserError(TuneforgeError):
    """Bad input from the user: a file, a flag, a value."""


class NotFound(TuneforgeError):
    """A named thing (model, file, adapter) does not exist."""


class ConfigError(TuneforgeError):
    """The environment or a configuration is not usable as it stands."""


class Conflict(TuneforgeError):
    """The request is valid but the thing is in the wrong state for it (e.g. cancelling a finished job)."""


class Unauthorized(TuneforgeError):
    """No API key, or one that is not known."""


class Forbidden(TuneforgeError):
    """A valid API key that may not do this (a project key on an admin route)."""


class RateLimited(TuneforgeError):
    """A project is over one of its limits (`tuneforge.limits`), or the server is full: try again after
    `retry_after` seconds (sent as HTTP 429 with a Retry-After header)."""

    def __init__(self, message: str = "", *, retry_after: int = 2, param: str | None = None, code: str | None = None):
        super().__init__(message, param=param, code=code or "rate_limit_exceeded")
        self.retry_after = retry_after
