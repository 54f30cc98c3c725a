"""Checks shared by the frozen configuration dataclasses, and the CLI's bridge to them.

Each configuration (PrepareConfig, TrainConfig, EvaluateConfig, TranscribeOptions, ...) checks all
of its fields in its own `__post_init__`, as openai/whisper's DecodingOptions does, using these
helpers so that every refusal reads the same: `--option VALUE: what is wrong`. The CLI passes
only the options a user gave (`given`), so every default is written once, in its dataclass.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

from galwhisper.errors import GalwhisperError


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def refuse(name: str, value: object, why: str) -> GalwhisperError:
    return GalwhisperError(f"{_flag(name)} {value}: {why}")


def whole(name: str, value: object, minimum: int = 1, maximum: int | None = None, optional: bool = False) -> None:
    """An int in [minimum, maximum] (None allowed when optional)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise refuse(name, value, "must be a whole number")
    if value < minimum:
        raise refuse(name, value, f"must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise refuse(name, value, f"must be at most {maximum}")


def number(name: str, value: object, minimum: float = 0.0, strict: bool = True, maximum: float | None = None,
           optional: bool = False) -> None:
    """A finite number > minimum (>= when not strict), <= maximum."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise refuse(name, value, "must be a finite number")
    if value < minimum or (strict and value == minimum):
        raise refuse(name, value, f"must be {'above' if strict else 'at least'} {minimum:g}")
    if maximum is not None and value > maximum:
        raise refuse(name, value, f"must be at most {maximum:g}")


def one_of(name: str, value: object, choices: Iterable[object]) -> None:
    choices = list(choices)
    if value not in choices:
        raise refuse(name, value, f"not one of {', '.join(map(str, choices))}")


def given(options: dict) -> dict:
    """The options a user actually gave (argparse leaves the others out or None)."""
    return {k: v for k, v in options.items() if v is not None}


def build(cls, options: dict, **fixed):
    """`cls(**fixed, **options)` keeping only options that are fields of `cls`."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**fixed, **{k: v for k, v in given(options).items() if k in names and k not in fixed})


def default(cls, name: str) -> object:
    """The default of field `name` of dataclass `cls` (for help texts: written once, read here)."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    if field.default is not dataclasses.MISSING:
        return field.default
    return field.default_factory()  # type: ignore[misc]
