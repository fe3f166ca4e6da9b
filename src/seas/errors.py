"""Errors caused by a user's input. The CLI prints their message on one line and exits 2."""


class SeasError(Exception):
    """Base class: the message names the file or option, what is wrong, and the fix."""


class DataError(SeasError):
    """A dataset on disk that cannot be used as it is."""


class ConfigError(SeasError):
    """An option or configuration value that is out of range or inconsistent."""


class RunError(SeasError):
    """A run folder that is missing, unfinished, or belongs to something else."""
