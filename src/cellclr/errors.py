"""The base of the errors that a user's input or command causes (printed without a traceback)."""


class CellclrError(Exception):
    """Bad input, bad config, or an output that would be overwritten."""
