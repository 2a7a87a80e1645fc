"""Errors a user can act on. The CLI prints them on one line and exits 2; pages show them."""


class UserError(Exception):
    """Bad input from a person: an invalid budget, a malformed dataset, an unreachable server."""


class EngineError(UserError):
    """An inference engine could not serve a request (unreachable, rejected, over context)."""


class DatasetError(UserError):
    """A dataset file is missing, malformed or of an unknown format."""
