"""The one exception type for errors a user can cause (bad file, bad URL, bad option).

Its message is a single line that names the input and what is wrong. The CLI prints it and
exits 2; the app shows it with gr.Error. Any other exception is a bug and keeps its traceback.
"""


class GalwhisperError(Exception):
    """A user-facing error with a one-line message."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line
