"""Errors meant for a user: one clear sentence, shown without a traceback by the CLI."""


class DasksaeError(Exception):
    """Base class of every error dasksae reports to a user."""


class ConfigError(DasksaeError, ValueError):
    """A network configuration, dtype or option that cannot be used."""
