"""Transcription engines (CTranslate2 through faster-whisper, transformers), long-form, writers.

The CTranslate2 engine is the default: it runs the bundled model as shipped and any model
`galwhisper train` exports. The transformers engine exists for parity checks. Both take their
log-mel features from `features.py`, the path training uses.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from galwhisper import features, models, options
from galwhisper.audio import SAMPLE_RATE, AudioInput, describe, load_audio
from galwhisper.errors import GalwhisperError
from galwhisper.files import safe_name, write_text_atomic
from galwhisper.languages import DEFAULT_LANGUAGE, language_code

SILENCE_PEAK = 1e-3  # below this peak amplitude there is nothing to transcribe
FORMATS = ("txt", "srt", "vtt", "json")
BACKENDS = ("ct2", "transformers")


@dataclass(frozen=True)
class TranscribeOptions:
    language: str | None = DEFAULT_LANGUAGE  # None or "auto": detect
    task: str = "transcribe"  # or "translate" (to English)
    beam_size: int = 1  # greedy: on 2 CPU cores beam 5 costs ~2x for little gain
    batch_size: int = 16  # >1: BatchedInferencePipeline over VAD windows; 16 beat 8 by ~10% (benchmarks)
    vad: bool = False  # with batch_size 1: skip non-speech with Silero VAD (batched always does)
    word_timestamps: bool = False
    # Segment timestamps predicted by the model. None (auto): only for sequential decoding
    # (batch_size 1) of audio longer than one 30 s window, where Whisper's long-form algorithm
    # seeks by them (without, windows cut sentences: 15 of 24 kept in a 3-minute test). Elsewhere
    # off: galwhisper fine-tunes with <|notimestamps|>, and a fine-tuned model asked for
    # timestamps was seen to transcribe differently.
    timestamps: bool | None = None

    def __post_init__(self):
        object.__setattr__(self, "language", language_code(self.language, allow_auto=True))
        options.one_of("task", self.task, ("transcribe", "translate"))
        options.whole("beam_size", self.beam_size, maximum=32)
        options.whole("batch_size", self.batch_size, maximum=256)


@dataclass
class Word:
    start: float
    end: float
    word: str
    probability: float


@dataclass
class Segment:
    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)


@dataclass
class Transcript:
    source: str
    text: str
    segments: list[Segment]
    language: str | None
    duration: float  # seconds of audio
    elapsed: float  # seconds of compute

    @property
    def real_time_factor(self) -> float:
        return self.elapsed / self.duration if self.duration else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "real_time_factor": self.real_time_factor}


class Transcriber:
    """A model loaded once, reused for every call (the app keeps one per model)."""

    def __init__(self, model: str = models.DEFAULT_MODEL, backend: str = "ct2", compute_type: str = "int8", cpu_threads: int = 0):
        options.one_of("backend", backend, BACKENDS)
        self.model_spec, self.backend = model, backend
        self.name = models.resolve(model).name
        if backend == "ct2":
            from faster_whisper import BatchedInferencePipeline

            self._model = models.load_whisper(model, compute_type, cpu_threads)
            self._batched = BatchedInferencePipeline(self._model)
            self.n_mels = self._model.feature_extractor.mel_filters.shape[0]
        else:
            import torch

            self._hf, self._processor = models.load_hf(model)
            self._hf.eval()
            self._torch = torch
            self.n_mels = self._hf.config.num_mel_bins

    # -- public -------------------------------------------------------------------------------

    def transcribe(self, source: AudioInput, options: TranscribeOptions | None = None, name: str | None = None) -> Transcript:
        options = options or TranscribeOptions()
        audio = load_audio(source)
        started = time.perf_counter()
        duration = len(audio) / SAMPLE_RATE
        if np.abs(audio).max(initial=0.0) < SILENCE_PEAK:
            segments, language = [], options.language
        elif self.backend == "ct2":
            segments, language = self._transcribe_ct2(audio, options)
        else:
            segments, language = self._transcribe_hf(audio, options)
        text = " ".join(s.text.strip() for s in segments if s.text.strip())
        return Transcript(name or describe(source), text, segments, language, duration, time.perf_counter() - started)

    # -- engines ------------------------------------------------------------------------------

    def _transcribe_ct2(self, audio: np.ndarray, o: TranscribeOptions):
        common = dict(
            language=o.language,
            task=o.task,
            beam_size=o.beam_size,
            word_timestamps=o.word_timestamps,
            vad_filter=o.vad,
            temperature=0.0,  # no fallback: it took 4-7x longer on poor audio for little gain
            condition_on_previous_text=False,  # stops one bad window from looping into the next
            without_timestamps=not self._use_timestamps(audio, o),
        )
        if o.batch_size > 1:
            # Batched decoding needs windows of <= 30 s; cutting them at pauses found by Silero VAD
            # keeps every sentence whole (fixed 30 s windows without timestamps dropped about
            # half the sentences of a 3-minute test).
            common.update(vad_filter=True)
            generator, info = self._batched.transcribe(audio, batch_size=o.batch_size, **common)
        else:
            generator, info = self._model.transcribe(audio, **common)
        segments = [
            Segment(
                float(s.start),
                float(s.end),
                s.text,
                [Word(float(w.start), float(w.end), w.word, float(w.probability)) for w in (s.words or [])],
            )
            for s in generator
        ]
        return segments, info.language

    @staticmethod
    def _use_timestamps(audio: np.ndarray, o: TranscribeOptions) -> bool:
        if o.timestamps is not None:
            return o.timestamps
        return o.batch_size <= 1 and len(audio) > features.MAX_SECONDS * SAMPLE_RATE

    def _transcribe_hf(self, audio: np.ndarray, o: TranscribeOptions):
        """Greedy/beam generate per 30 s window, features from features.py (parity reference)."""
        torch, window = self._torch, int(features.MAX_SECONDS * SAMPLE_RATE)
        segments = []
        for start in range(0, len(audio), window):
            chunk = audio[start : start + window]
            batch = torch.from_numpy(features.model_input(chunk, self.n_mels)[None])
            with torch.inference_mode():
                ids = self._hf.generate(batch, language=o.language, task=o.task, num_beams=o.beam_size, max_new_tokens=features.MAX_NEW_TOKENS)
            text = self._processor.tokenizer.decode(ids[0], skip_special_tokens=True)
            segments.append(Segment(start / SAMPLE_RATE, (start + len(chunk)) / SAMPLE_RATE, text))
        return segments, o.language


# ---------------------------------------------------------------------------------------------
# Inputs: files and URLs


def transcribe_inputs(inputs: Iterable[str], transcriber: Transcriber, options: TranscribeOptions, limits=None):
    """Yield (input, Transcript | GalwhisperError) for files and http(s)/YouTube URLs."""
    from galwhisper import media

    for item in inputs:
        try:
            if media.is_url(item):
                with media.fetched_audio(item, limits) as info:
                    yield item, transcriber.transcribe(info.path, options, name=item)
            else:
                yield item, transcriber.transcribe(item, options)
        except GalwhisperError as exc:
            yield item, exc


# ---------------------------------------------------------------------------------------------
# Writers


def _timestamp(seconds: float, decimal: str) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{decimal}{ms:03d}"


def to_srt(transcript: Transcript) -> str:
    blocks = [
        f"{i}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text.strip()}\n"
        for i, s in enumerate(transcript.segments, start=1)
    ]
    return "\n".join(blocks)


def to_vtt(transcript: Transcript) -> str:
    cues = [f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text.strip()}\n" for s in transcript.segments]
    return "WEBVTT\n\n" + "\n".join(cues)


def render(transcript: Transcript, fmt: str) -> str:
    if fmt == "txt":
        return transcript.text + "\n"
    if fmt == "srt":
        return to_srt(transcript)
    if fmt == "vtt":
        return to_vtt(transcript)
    if fmt == "json":
        return json.dumps(transcript.to_dict(), ensure_ascii=False, indent=2) + "\n"
    raise GalwhisperError(f"{fmt}: unknown output format (one of {', '.join(FORMATS)})")


def output_name(source: str) -> str:
    """A file stem for an input: the file's stem, or a safe name made from a URL."""
    from galwhisper import media

    if media.is_url(source):
        stem = Path(source.rstrip("/").rsplit("/", 1)[-1].split("?")[0] or "url").stem
    else:
        stem = Path(source).stem
    return safe_name(stem, "transcript")


def output_names(sources: list[str]) -> dict[str, str]:
    """A distinct file stem per input, so that no transcript overwrites another's: inputs that
    share a stem keep their extension (good.wav -> good.wav.srt, good.mp3 -> good.mp3.srt) when
    that tells them apart, and are numbered when it does not (a/x.wav -> x, b/x.wav -> x-2)."""
    stems = {source: output_name(source) for source in dict.fromkeys(sources)}
    names: dict[str, str] = {}
    for stem in dict.fromkeys(stems.values()):
        group = [source for source, s in stems.items() if s == stem]
        suffixes = [Path(source.split("?")[0]).suffix for source in group]
        if len(group) == 1:
            names[group[0]] = stem
        elif all(suffixes) and len(set(suffixes)) == len(group):
            names.update({source: safe_name(stem + suffix, stem) for source, suffix in zip(group, suffixes)})
        else:
            names.update({source: stem if i == 0 else f"{stem}-{i + 1}" for i, source in enumerate(group)})
    taken: set[str] = set()
    for source, name in names.items():  # a numbered name may meet an input's own stem (x-2.wav)
        unique, number = name, 2
        while unique in taken:
            unique, number = f"{name}-{number}", number + 1
        names[source] = unique
        taken.add(unique)
    return names


def write_transcript(transcript: Transcript, fmt: str, output_dir: str | os.PathLike, stem: str | None = None) -> Path:
    path = Path(output_dir) / f"{stem or output_name(transcript.source)}.{fmt}"
    return write_text_atomic(path, render(transcript, fmt))
