"""The one language check, for every stage and the app: Whisper's codes and names.

Whisper's language list comes from transformers (the same table its tokenizer uses): 100 codes
(`gl`, `pt`, ..., large-v3's `yue`) and their English names (`galician`). A user may give either.
"""

from __future__ import annotations

from functools import lru_cache

from galwhisper.errors import GalwhisperError

DEFAULT_LANGUAGE = "gl"
AUTO = "auto"  # detect the spoken language (transcription only)


@lru_cache(maxsize=1)
def _tables() -> tuple[dict[str, str], dict[str, str]]:
    from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

    return dict(LANGUAGES), dict(TO_LANGUAGE_CODE)


def language_code(value: str | None, allow_auto: bool = False, option: str = "--language") -> str | None:
    """The Whisper code for a code or name (`gl`, `Galician`); None for `auto` where allowed."""
    text = (value or "").strip().lower()
    if allow_auto and text in (AUTO, ""):
        return None
    codes, names = _tables()
    if text in codes:
        return text
    if text in names:
        return names[text]
    hint = " or auto" if allow_auto else ""
    raise GalwhisperError(f"{option} {value}: not a Whisper language (a code such as gl, es, en, or a name such as galician{hint})")


def language_name(code: str) -> str:
    return _tables()[0].get(code, code)
