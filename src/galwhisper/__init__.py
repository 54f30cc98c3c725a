"""galwhisper: fine-tune Whisper for Galician (or any language), measure WER, serve the result."""

from galwhisper.errors import GalwhisperError

__version__ = "0.1.0"
__all__ = ["GalwhisperError", "__version__"]
