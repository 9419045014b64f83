"""The one exception type the CLI turns into a one-line message and exit status 2."""


class UserError(Exception):
    """Bad input from the user (a file, a name, a value): the message says what is wrong and how to fix it."""
