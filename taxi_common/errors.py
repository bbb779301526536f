"""Errors a user can cause. The CLI prints their message on one line, without a traceback."""


class WorkbookError(Exception):
    """Base class: a problem with input, data or environment that the user can fix."""


class DataUnavailableError(WorkbookError):
    """A month that cannot be had: not published, or no network."""


class TransientDataError(DataUnavailableError):
    """A month that could not be had this time (no connection, a timeout, HTTP 5xx): worth
    retrying, unlike an unpublished month or a bad schema."""


class DataCorruptError(WorkbookError):
    """A file that is truncated or not a valid parquet file."""


class SchemaError(WorkbookError):
    """A table whose columns or types are not those of the TLC schema."""


class BadInputError(WorkbookError, ValueError):
    """An argument a user gave that cannot be used (a malformed month, an unknown name)."""
