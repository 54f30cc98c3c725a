"""What a user sees on the terminal: the one exception type for errors a user can cause (bad
file, bad URL, bad option), its one-line messages, and when progress bars are drawn.

An error's message is a single line that names the input and what is wrong. The CLI prints it
and exits 2; the app shows it with gr.Error. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

MAX_DETAIL = 200  # characters of a library's message quoted inside ours


class GalwhisperError(Exception):
    """A user-facing error with a one-line message."""

    def __init__(self, message: str):
        super().__init__(one_line(message, limit=None))


def one_line(text: object, limit: int | None = MAX_DETAIL) -> str:
    """`text` (or an exception's message, else its type name) folded onto one line, cut at `limit`."""
    folded = " ".join(str(text).split())
    if not folded and isinstance(text, BaseException):
        folded = type(text).__name__
    if limit is not None and len(folded) > limit:
        folded = folded[: limit - 1] + "…"
    return folded


def bars_disabled(progress: bool) -> bool | None:
    """tqdm's `disable` for a stage asked to show progress: bars on a terminal only (None lets
    tqdm check), so logs and captured output hold results and errors, not redrawn bars."""
    return None if progress else True


def bars_on(progress: bool) -> bool:
    """The same rule for libraries that take a plain flag (Trainer's disable_tqdm is `not` it)."""
    return progress and sys.stderr.isatty()
