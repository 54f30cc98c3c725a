"""Decode anything ffmpeg reads to 16 kHz mono float32, with one-line errors for bad files.

Decoding runs in-process through PyAV (FFmpeg's libraries, the same decoder faster-whisper
uses), which avoids one ffmpeg process per clip when preparing thousands of clips.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np

from galwhisper.errors import GalwhisperError, one_line

MP3_COMPRESSION = 0.75  # libsndfile's 0..1 scale; 0.75 is 48 kbit/s CBR at 16 kHz mono

SAMPLE_RATE = 16000
AudioInput = Union[str, os.PathLike, bytes, BinaryIO, np.ndarray]


def load_audio(source: AudioInput, sample_rate: int = SAMPLE_RATE, max_seconds: float | None = None) -> np.ndarray:
    """Return the audio of `source` as mono float32 at `sample_rate`.

    `source` is a path, raw file bytes, a binary file object, or an array that is already
    16 kHz mono (returned as float32). With `max_seconds`, audio that is longer is refused from
    the container's stated duration, or while decoding, never after decoding all of it.
    Raises GalwhisperError naming the input on failure.
    """
    if isinstance(source, np.ndarray):
        audio = np.ascontiguousarray(source, dtype=np.float32).reshape(-1)
        if max_seconds is not None and len(audio) > max_seconds * sample_rate:
            raise GalwhisperError(f"{describe(source)}: {_over(len(audio) / sample_rate, max_seconds)}")
        return audio
    name = describe(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise GalwhisperError(f"{name}: file not found")
        if path.is_dir():
            raise GalwhisperError(f"{name}: is a folder, not an audio file")
        if path.stat().st_size == 0:
            raise GalwhisperError(f"{name}: file is empty")
        source = str(path)
    elif isinstance(source, bytes):
        if not source:
            raise GalwhisperError(f"{name}: no audio data")
        source = io.BytesIO(source)
    try:
        audio = _decode(source, sample_rate, max_seconds)
    except (GalwhisperError, MemoryError):
        raise
    except _TooLong as exc:
        raise GalwhisperError(f"{name}: {_over(exc.seconds, max_seconds)}") from None
    except _NoAudio:
        raise GalwhisperError(f"{name}: has no audio stream (a video or image without sound?)") from None
    except Exception as exc:  # PyAV raises many types; all mean "not decodable"
        raise GalwhisperError(f"{name}: not a readable audio/video file ({one_line(exc, 160)})") from None
    if audio.size == 0:
        raise GalwhisperError(f"{name}: contains no audio samples")
    return audio


class _NoAudio(Exception):
    pass


class _TooLong(Exception):
    def __init__(self, seconds: float):
        super().__init__(seconds)
        self.seconds = seconds


def _over(seconds: float, cap: float | None) -> str:
    return f"is {seconds:.0f} s long, over the {cap:g} s duration limit"


def _decode(source, sample_rate: int, max_seconds: float | None = None) -> np.ndarray:
    """PyAV decode + resample to mono float32, as faster_whisper.audio.decode_audio does, but
    without its gc.collect() per call: with transformers imported that collection cost ~100 ms
    a clip, 30x the decoding itself (benchmarks/prepare_speed.py)."""
    import av

    resampler = av.audio.resampler.AudioResampler(format="s16", layout="mono", rate=sample_rate)
    chunks, samples = [], 0
    limit = None if max_seconds is None else int(max_seconds * sample_rate)
    with av.open(source, mode="r", metadata_errors="ignore") as container:
        if not container.streams.audio:
            raise _NoAudio()
        stated = container.duration / av.time_base if container.duration else None
        if max_seconds is not None and stated is not None and stated > max_seconds + 1:
            raise _TooLong(stated)
        for frame in _valid_frames(container.decode(audio=0)):
            frame.pts = None
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
                samples += chunks[-1].size
            if limit is not None and samples > limit + sample_rate:
                raise _TooLong(samples / sample_rate)
        chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]  # flush
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    audio = np.concatenate(chunks).astype(np.float32) / 32768.0
    if limit is not None and audio.size > limit:
        raise _TooLong(audio.size / sample_rate)
    return audio


def _valid_frames(frames):
    """Skip frames FFmpeg cannot decode (a damaged stretch), keep the rest."""
    import av

    iterator = iter(frames)
    while True:
        try:
            yield next(iterator)
        except StopIteration:
            return
        except av.error.InvalidDataError:
            continue


def duration_seconds(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    return float(len(audio)) / sample_rate


def mono_float32(samples: np.ndarray) -> np.ndarray:
    """Samples as mono float32 in [-1, 1]: integers scaled, (frames, channels) averaged."""
    samples = np.asarray(samples)
    if np.issubdtype(samples.dtype, np.integer):
        samples = samples.astype(np.float32) / float(np.iinfo(samples.dtype).max + 1)
    samples = samples.astype(np.float32)
    if samples.ndim == 2:  # (frames, channels)
        samples = samples.mean(axis=1)
    return np.ascontiguousarray(samples.reshape(-1))


def to_mono_16k(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Convert an in-memory recording (e.g. Gradio's 44.1 kHz int16 microphone) to 16 kHz mono."""
    samples = mono_float32(samples)
    if sample_rate == SAMPLE_RATE or samples.size == 0:
        return samples
    # Resample through the same FFmpeg decoder as every file, so there is one resampler.
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, samples, int(sample_rate), format="WAV", subtype="FLOAT")
    return load_audio(buffer.getvalue())


class StreamResampler:
    """Chunks of a stream at any sample rate -> 16 kHz mono float32, one chunk at a time.

    One FFmpeg resampler is kept for the whole stream: resampling each chunk on its own would
    restart the filter at every chunk boundary (a click a second in live audio)."""

    def __init__(self) -> None:
        self._resampler = None
        self._rate: int | None = None

    def __call__(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        import av

        samples = mono_float32(samples)
        if int(sample_rate) == SAMPLE_RATE and self._resampler is None:
            return samples
        if self._rate != int(sample_rate):  # a new stream, or one that changed its rate
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            self._rate = int(sample_rate)
        if samples.size == 0:
            return samples
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
        frame.sample_rate = self._rate
        return _joined(self._resampler.resample(frame))

    def flush(self) -> np.ndarray:
        """What the resampler still holds (call once, at the end of the stream)."""
        if self._resampler is None:
            return np.zeros(0, dtype=np.float32)
        return _joined(self._resampler.resample(None))


def _joined(frames) -> np.ndarray:
    parts = [f.to_ndarray().reshape(-1) for f in frames]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, dtype=np.float32)


def join_with_pauses(clips: list[np.ndarray], pauses: list[float]) -> tuple[np.ndarray, list[float]]:
    """The clips (16 kHz) joined, each after its pause of silence; returns the audio and the
    second at which each clip starts in it (packed training windows, long-form test audio)."""
    pieces, starts, samples = [], [], 0
    for clip, pause in zip(clips, pauses):
        gap = round(pause * SAMPLE_RATE)
        pieces += [np.zeros(gap, np.float32), clip]
        starts.append((samples + gap) / SAMPLE_RATE)
        samples += gap + len(clip)
    return (np.concatenate(pieces) if pieces else np.zeros(0, np.float32)), starts


def read_samples(source: Union[str, os.PathLike]) -> tuple[np.ndarray, int]:
    """(mono float32 samples, sample rate) of a short file such as a streamed microphone chunk,
    at its own rate (a stream is resampled as a whole by StreamResampler)."""
    import soundfile as sf

    name = describe(source)
    try:
        samples, rate = sf.read(str(source), dtype="float32", always_2d=True)
    except (RuntimeError, OSError, ValueError) as exc:  # soundfile's errors for unreadable data
        detail = getattr(exc, "error_string", None) or one_line(exc, 120)  # error_string: without the path
        raise GalwhisperError(f"{name}: not a readable audio chunk ({detail})") from None
    return mono_float32(samples), int(rate)


def write_wav(path: Union[str, os.PathLike], audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    import soundfile as sf

    sf.write(str(path), audio, sample_rate, subtype="PCM_16")


def write_mp3(path: Union[str, os.PathLike], audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Constant ~48 kbit/s MP3 (Common Voice's format), encoded in-process by libsndfile's LAME:
    21 ms for a 4-s clip where starting an ffmpeg process alone took ~70 ms (AMD EPYC)."""
    import soundfile as sf

    try:
        sf.write(str(path), audio, sample_rate, format="MP3", subtype="MPEG_LAYER_III",
                 bitrate_mode="CONSTANT", compression_level=MP3_COMPRESSION)
    except (RuntimeError, OSError, ValueError) as exc:  # libsndfile without MP3, a full disk, ...
        detail = getattr(exc, "error_string", None) or one_line(exc, 120)
        raise GalwhisperError(f"{path}: could not write MP3 ({detail})") from None


def describe(source: AudioInput) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return getattr(source, "name", None) or "<audio data>"
