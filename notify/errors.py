"""Errors a user can cause and fix; the CLI prints them as one line, never a traceback."""


class NotifyError(Exception):
    """A foreseeable problem (bad input, unknown campaign, unreachable file).

    The message is a complete one-line sentence naming what was wrong, e.g.
    ``contacts.csv, line 14, column "phone": "abc" is not a phone number``.
    """

    exit_code = 1


class NotFound(NotifyError):
    """The thing a command names (campaign, contact) does not exist."""


class ConfigError(NotifyError):
    """A campaign file or environment variable holds an unusable value."""
