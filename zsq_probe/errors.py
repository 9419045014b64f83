"""The library's exception for bad input, and the one helper that shortens an error to one line.

Library code raises `UserError` (a `ValueError`) for input a user can fix: a file, a name, a value, and
`ComputeError` (a `UserError`) when a run failed while computing.  Only the command line (`zsq_probe.cli`)
turns them into a one-line message and an exit status (2 and 1).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(ValueError):
    """Bad input from the user (a file, a name, a value): the message says what is wrong and how to fix it."""


class ComputeError(UserError):
    """A run failed while computing (non-finite numbers, a figure that could not be drawn): the message says
    where and what to try.  The command line exits 1 on it (bad input: 2); a `UserError` for callers that
    catch those."""


def one_line(exc_or_text: BaseException | str, limit: int | None = 200, *, with_type: bool = True) -> str:
    """`exc_or_text` as one line: whitespace (newlines included) collapsed, cut to `limit` characters
    ("..." marks a cut; None: no limit).  An exception is prefixed by its class name unless
    `with_type=False`; an exception with an empty message gives its class name alone."""
    is_exc = isinstance(exc_or_text, BaseException)
    text = " ".join(str(exc_or_text).split())
    if limit is not None and len(text) > limit:
        text = text[: max(limit - 3, 0)] + "..."
    if not is_exc:
        return text
    name = type(exc_or_text).__name__
    if not text:
        return name
    return f"{name}: {text}" if with_type else text


def did_you_mean(name: str, choices: Iterable[object]) -> str:
    """The closest of `choices` to `name`, as a hint to append to an error message.

    Args:
        name: The name the user gave.
        choices: The valid names (compared as strings).

    Returns:
        " (did you mean a, b?)" with up to three close matches, or an empty string when none is close.
    """
    m = difflib.get_close_matches(str(name), [str(c) for c in choices], n=3)
    return f" (did you mean {', '.join(m)}?)" if m else ""
