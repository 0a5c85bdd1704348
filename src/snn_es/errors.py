"""The base class of errors whose message already says what is wrong and how to fix it."""


class UserError(Exception):
    """Reported as one line, without a traceback, by the Snakemake job glue."""
