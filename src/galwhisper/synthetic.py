"""The built-in synthetic Galician corpus: packaged sentences spoken by espeak-ng.

There is no Galician espeak-ng voice, so the sentences are read by its Portuguese and Spanish
voices (and their +variants): accented, robotic Galician that is still good enough to check that
the whole fine-tuning pipeline works offline, with no download. The result is written in the
Common Voice layout (clips/*.mp3 plus train/dev/test.tsv), so every loader that reads Common
Voice reads it too.

Splits are by sentence, fixed by a stable hash, so no sentence is both trained on and tested on.
Train, validation and test are spoken by a pool of "seen" voices; split `test_unseen` speaks the
test sentences again with one voice that is never in the pool, to measure how much of the gain
is learning the voices rather than the language.

Everything random (voice, speed, pitch, gain, noise, silence, speed perturbation) is drawn from a
numpy Generator seeded by (seed, split, index), so the same config gives the same corpus.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from galwhisper import options
from galwhisper.audio import SAMPLE_RATE, join_with_pauses, load_audio, write_mp3
from galwhisper.errors import GalwhisperError, bars_disabled
from galwhisper.files import cache_root, write_json_atomic

logger = logging.getLogger(__name__)

# Bump when the rendering changes, so corpora built by older code are rebuilt, not reused.
FORMAT_VERSION = 3  # 2: TSVs carry each clip's speech times (column `segments`); 3: libsndfile MP3

SPLITS = ("train", "validation", "test")
UNSEEN_SPLIT = "test_unseen"
# Common Voice file name of each split (CV calls validation "dev").
TSV_NAMES = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv", UNSEEN_SPLIT: "test_unseen.tsv"}
# Common Voice's columns, plus `segments`: where the speech is in the clip, as JSON
# [[start, end, sentence]] in seconds (known exactly here: the plan adds the silences).
TSV_COLUMNS = ("client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accents", "locale", "segment",
               "segments")
# Part of every clip's random seed, so splits never share random draws.
_SPLIT_CODES = {"train": 0, "validation": 1, "test": 2, UNSEEN_SPLIT: 3}

BASE_VOICES = ("pt", "pt-br", "es", "es-419")
SEEN_VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
DEFAULT_SEEN_VOICES = tuple(base + (f"+{variant}" if variant else "") for base in BASE_VOICES for variant in SEEN_VARIANTS)
# A Portuguese voice with a variant (its own pitch and formants) that the seen pool never uses.
DEFAULT_UNSEEN_VOICE = "pt+Henrique"

SENTENCES_RESOURCE = "data/gl_sentences.txt"


@dataclass(frozen=True)
class SyntheticConfig:
    """What to render. Everything except out_dir and num_workers decides the corpus content."""

    out_dir: Path
    n_train: int | None = None  # sentences per split; None = all of the split
    n_validation: int | None = None
    n_test: int | None = None  # also the size of test_unseen (same sentences)
    seed: int = 0
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    snr_db: tuple[float, float] = (15.0, 35.0)  # speech-to-noise ratio of added white or pink noise
    gain_db: tuple[float, float] = (-10.0, 6.0)  # relative to a -20 dBFS RMS reference level
    speed_wpm: tuple[int, int] = (130, 190)  # espeak-ng -s (words per minute)
    pitch: tuple[int, int] = (30, 70)  # espeak-ng -p (0-99)
    speed_perturb: tuple[float, float] | None = (0.9, 1.1)  # resampling factor (tempo and pitch); None = off
    silence_s: tuple[float, float] = (0.05, 0.4)  # silence kept before and after the speech
    seen_voices: tuple[str, ...] = DEFAULT_SEEN_VOICES
    unseen_voice: str = DEFAULT_UNSEEN_VOICE
    sentences_file: Path | None = None  # None = the packaged Galician sentences
    num_workers: int = 2

    def __post_init__(self):
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        for name in ("n_train", "n_validation", "n_test"):
            options.whole(name, getattr(self, name), minimum=0, optional=True)
        for name in ("snr_db", "gain_db", "speed_wpm", "pitch", "speed_perturb", "silence_s"):
            value = getattr(self, name)
            if value is None and name == "speed_perturb":
                continue
            if len(value) != 2 or value[0] > value[1]:
                raise options.refuse(name, value, "must be a (low, high) range with low <= high")
        if self.silence_s[0] < 0 or (self.speed_perturb and self.speed_perturb[0] <= 0):
            raise GalwhisperError("silence_s and speed_perturb must be positive")
        _check_fractions(self.validation_fraction, self.test_fraction)
        if not self.seen_voices:
            raise GalwhisperError("seen_voices: needs at least one espeak-ng voice")
        if self.unseen_voice in self.seen_voices:
            raise GalwhisperError(f"unseen_voice={self.unseen_voice}: is also in seen_voices")
        options.whole("num_workers", self.num_workers)


@dataclass
class ClipPlan:
    """Every random choice for one clip, drawn before any audio is rendered."""

    split: str
    index: int
    file: str
    sentence: str
    voice: str
    speed_wpm: int
    pitch: int
    speed_factor: float
    gain_db: float
    snr_db: float
    noise: str  # "white" or "pink"
    lead_s: float
    trail_s: float
    noise_seed: int = field(repr=False)


# ---------------------------------------------------------------- sentences and splits


def load_sentences(path: os.PathLike | None = None) -> list[str]:
    """The packaged Galician sentences (or those of `path`), one per non-empty line."""
    if path is None:
        resource = resources.files("galwhisper").joinpath(SENTENCES_RESOURCE)
        name = f"galwhisper/{SENTENCES_RESOURCE}"
        if not resource.is_file():
            raise GalwhisperError(f"{name}: packaged sentence list is missing (reinstall galwhisper)")
        text = resource.read_text(encoding="utf-8")
    else:
        name = str(path)
        try:
            text = Path(path).expanduser().read_text(encoding="utf-8")
        except FileNotFoundError:
            raise GalwhisperError(f"{name}: sentence file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise GalwhisperError(f"{name}: cannot read sentence file ({exc})") from None
    sentences = [" ".join(line.split()) for line in text.splitlines()]
    sentences = [s for s in sentences if s and not s.startswith("#")]
    if not sentences:
        raise GalwhisperError(f"{name}: no sentences in the file")
    return sentences


def split_sentences(sentences: list[str], seed: int = 0, validation: float = 0.1, test: float = 0.1) -> dict[str, list[str]]:
    """Assign each distinct sentence to train, validation or test by a stable hash.

    A sentence's split depends only on its text and the seed (not on the other sentences), so
    adding sentences to the list never moves old ones between splits. Within a split sentences
    are ordered by the hash too, so taking the first N gives a spread-out sample.
    """
    _check_fractions(validation, test)
    scored: dict[str, float] = {}
    for sentence in sentences:
        key = " ".join(sentence.split()).casefold()  # near-duplicates land in the same split
        if not key or sentence in scored:
            continue
        digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
        scored[sentence] = int.from_bytes(digest[:8], "big") / 2**64
    splits: dict[str, list[str]] = {name: [] for name in SPLITS}
    for sentence, score in sorted(scored.items(), key=lambda item: item[1]):
        if score < test:
            splits["test"].append(sentence)
        elif score < test + validation:
            splits["validation"].append(sentence)
        else:
            splits["train"].append(sentence)
    return splits


def _check_fractions(validation: float, test: float) -> None:
    if not (0 <= validation < 1 and 0 <= test < 1 and validation + test < 1):
        raise GalwhisperError(f"validation={validation}, test={test}: fractions must be in [0, 1) and sum below 1")


# ---------------------------------------------------------------- planning


def plan_corpus(config: SyntheticConfig, sentences: list[str] | None = None) -> list[ClipPlan]:
    """Draw every clip's voice, prosody and augmentation; deterministic for a config."""
    if sentences is None:
        sentences = load_sentences(config.sentences_file)
    splits = split_sentences(sentences, config.seed, config.validation_fraction, config.test_fraction)
    limits = {"train": config.n_train, "validation": config.n_validation, "test": config.n_test}
    plans: list[ClipPlan] = []
    for split in SPLITS:
        chosen = splits[split] if limits[split] is None else splits[split][: limits[split]]
        for index, sentence in enumerate(chosen):
            plans.append(_plan_clip(config, split, index, sentence))
    # test_unseen repeats each test clip with only the voice changed, so the gap between the
    # two splits' WER measures the voice alone.
    for plan in [p for p in plans if p.split == "test"]:
        plans.append(dataclasses.replace(plan, split=UNSEEN_SPLIT, file=_clip_name(UNSEEN_SPLIT, plan.index), voice=config.unseen_voice))
    return plans


def _plan_clip(config: SyntheticConfig, split: str, index: int, sentence: str) -> ClipPlan:
    rng = np.random.default_rng([config.seed, _SPLIT_CODES[split], index])
    # Draw in a fixed order; adding a draw at the end keeps the earlier ones unchanged.
    voice = config.seen_voices[int(rng.integers(len(config.seen_voices)))]
    speed_wpm = int(rng.integers(config.speed_wpm[0], config.speed_wpm[1] + 1))
    pitch = int(rng.integers(config.pitch[0], config.pitch[1] + 1))
    factor = float(rng.uniform(*config.speed_perturb)) if config.speed_perturb else 1.0
    return ClipPlan(
        split=split,
        index=index,
        file=_clip_name(split, index),
        sentence=sentence,
        voice=voice,
        speed_wpm=speed_wpm,
        pitch=pitch,
        speed_factor=round(factor, 4),
        gain_db=round(float(rng.uniform(*config.gain_db)), 2),
        snr_db=round(float(rng.uniform(*config.snr_db)), 2),
        noise=str(rng.choice(["white", "pink"])),
        lead_s=round(float(rng.uniform(*config.silence_s)), 3),
        trail_s=round(float(rng.uniform(*config.silence_s)), 3),
        noise_seed=int(rng.integers(2**31)),
    )


def _clip_name(split: str, index: int) -> str:
    return f"synthetic_gl_{split}_{index:05d}.mp3"


# ---------------------------------------------------------------- building


def build_corpus(config: SyntheticConfig, progress: bool = True) -> Path:
    """Render the corpus into config.out_dir (Common Voice layout) and return that folder.

    Reuses the folder when its corpus.json was written for the same content settings and all
    its clips exist. Otherwise builds into a temporary folder beside it and renames that into
    place at the end, so an interrupted build never looks complete.
    """
    out_dir = Path(config.out_dir).expanduser().resolve()
    sentences = load_sentences(config.sentences_file)
    plans = plan_corpus(config, sentences)
    key = _content_key(config, sentences)
    if _is_complete(out_dir, key, plans):
        logger.info("Reusing the synthetic corpus in %s (%d clips, same settings)", out_dir, len(plans))
        return out_dir
    _check_replaceable(out_dir)
    _check_tools(config)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    try:
        started = time.monotonic()
        speech = _render_all(plans, staging, config.num_workers, progress)
        _write_tsvs(plans, staging, speech)
        seconds = time.monotonic() - started
        write_json_atomic(staging / "corpus.json", _describe(config, key, plans, seconds))  # last: marks completeness
        _move_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("Built the synthetic corpus in %s: %d clips in %.1f s", out_dir, len(plans), seconds)
    return out_dir


def default_corpus_dir() -> Path:
    """Where `synthetic` without a folder is built: under the cache root."""
    return cache_root() / "synthetic"


def _content_key(config: SyntheticConfig, sentences: list[str]) -> dict:
    """Everything the clips depend on, in JSON form (tuples become lists, paths strings)."""
    settings = dataclasses.asdict(config)
    for name in ("out_dir", "num_workers", "sentences_file"):  # where/how fast, not what
        settings.pop(name)
    sentences_hash = hashlib.sha256("\n".join(sentences).encode("utf-8")).hexdigest()
    return json.loads(json.dumps({"format_version": FORMAT_VERSION, "settings": settings, "sentences_sha256": sentences_hash}))


def _read_corpus_json(out_dir: Path) -> dict | None:
    try:
        data = json.loads((out_dir / "corpus.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _is_complete(out_dir: Path, key: dict, plans: list[ClipPlan]) -> bool:
    info = _read_corpus_json(out_dir)
    if not info or info.get("content_key") != key:
        return False
    clips = out_dir / "clips"
    tsvs_exist = all((out_dir / name).is_file() for name in TSV_NAMES.values())
    return tsvs_exist and all(_nonempty(clips / plan.file) for plan in plans)


def _nonempty(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def _check_replaceable(out_dir: Path) -> None:
    """Only ever replace an older synthetic corpus or an empty folder, never a user's data."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise GalwhisperError(f"{out_dir}: exists and is not a folder; choose another output folder")
    info = _read_corpus_json(out_dir)
    if (info is None or not info.get("synthetic")) and any(out_dir.iterdir()):
        raise GalwhisperError(f"{out_dir}: folder is not empty and holds no synthetic corpus; choose another output folder")


def _check_tools(config: SyntheticConfig) -> None:
    if shutil.which("espeak-ng") is None:
        raise GalwhisperError("espeak-ng: not installed; install it (e.g. apt-get install espeak-ng)")
    languages, variants = _installed_voices()
    for voice in (*config.seen_voices, config.unseen_voice):
        language, _, variant = voice.partition("+")
        if language.lower() not in languages or (variant and variant not in variants):
            raise GalwhisperError(f"{voice}: not an installed espeak-ng voice (see espeak-ng --voices)")


def _installed_voices() -> tuple[set[str], set[str]]:
    def table(option: str) -> list[list[str]]:
        result = subprocess.run(["espeak-ng", option], capture_output=True, text=True, check=False)
        return [line.split() for line in result.stdout.splitlines()[1:] if line.split()]

    # Columns: Pty Language Age/Gender VoiceName File [Other languages]; a variant's File is !v/NAME.
    languages = {row[1].lower() for row in table("--voices") if len(row) > 1}
    variants = {row[4][3:] for row in table("--voices=variant") if len(row) > 4 and row[4].startswith("!v/")}
    return languages, variants


def _render_all(plans: list[ClipPlan], staging: Path, num_workers: int, progress: bool) -> dict[str, tuple[float, float]]:
    """Render every clip; return each clip's speech (start, end) in seconds, by file name."""
    from tqdm.auto import tqdm

    clips = staging / "clips"
    scratch = staging / "scratch"
    clips.mkdir()
    scratch.mkdir()
    # Threads suffice: the work is in espeak-ng subprocesses, libsndfile's encoder and numpy.
    pool = ThreadPoolExecutor(max_workers=num_workers)
    try:
        with tqdm(total=len(plans), desc="Synthetic corpus", unit="clip", disable=bars_disabled(progress)) as bar:
            futures = [pool.submit(render_clip, plan, clips / plan.file, scratch) for plan in plans]
            for future in futures:
                future.add_done_callback(lambda _: bar.update())
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for future in done:
                future.result()  # re-raises the first error
    finally:
        # On an error or Ctrl-C, drop the clips not started yet instead of rendering them all.
        pool.shutdown(wait=True, cancel_futures=True)
    shutil.rmtree(scratch)
    return {plan.file: future.result() for plan, future in zip(plans, futures)}


def render_clip(plan: ClipPlan, mp3_path: Path, scratch_dir: Path) -> tuple[float, float]:
    """Speak plan.sentence with espeak-ng, augment it, and encode it to mp3_path; return where
    the speech is in the clip, (start, end) in seconds."""
    wav = Path(scratch_dir) / (Path(plan.file).stem + ".wav")
    command = ["espeak-ng", "-v", plan.voice, "-s", str(plan.speed_wpm), "-p", str(plan.pitch), "-w", str(wav), "--stdin"]
    # The text goes through stdin so no sentence can be mistaken for an option.
    result = subprocess.run(command, input=plan.sentence.encode("utf-8"), capture_output=True, check=False)
    if result.returncode != 0 or not _nonempty(wav):
        detail = result.stderr.decode("utf-8", "replace").strip() or f"exit code {result.returncode}"
        raise GalwhisperError(f"espeak-ng -v {plan.voice}: could not speak {plan.split} sentence {plan.index} ({detail})")
    speech = load_audio(wav)
    wav.unlink()
    audio = augment(speech, plan)
    write_mp3(mp3_path, audio)
    return plan.lead_s, len(audio) / SAMPLE_RATE - plan.trail_s


def augment(speech: np.ndarray, plan: ClipPlan) -> np.ndarray:
    """Trim, speed-perturb, level, pad and add noise to 16 kHz speech, as the plan says."""
    rng = np.random.default_rng(plan.noise_seed)
    speech = _trim_silence(speech.astype(np.float64))
    if plan.speed_factor != 1.0:
        # Resampling, like Kaldi's speed perturbation: changes tempo and pitch together.
        n_out = max(1, round(len(speech) / plan.speed_factor))
        speech = np.interp(np.linspace(0, len(speech) - 1, n_out), np.arange(len(speech)), speech)
    rms = float(np.sqrt(np.mean(speech**2))) or 1.0
    speech *= 10 ** ((-20.0 + plan.gain_db) / 20) / rms
    lead, trail = (np.zeros(round(s * SAMPLE_RATE)) for s in (plan.lead_s, plan.trail_s))
    audio = np.concatenate([lead, speech, trail])
    noise = _noise(rng, len(audio), plan.noise)
    # The SNR refers to the speech itself, not to the padded clip.
    audio += noise * float(np.sqrt(np.mean(speech**2))) / 10 ** (plan.snr_db / 20)
    peak = float(np.max(np.abs(audio)))
    if peak > 0.99:  # a limiter, not clipping: clipping would add distortion no microphone has
        audio *= 0.99 / peak
    return audio.astype(np.float32)


def _trim_silence(audio: np.ndarray, floor_db: float = -40.0) -> np.ndarray:
    """Cut espeak-ng's leading and trailing silence; the plan adds back a random amount."""
    if audio.size == 0:
        return audio
    loud = np.flatnonzero(np.abs(audio) > np.max(np.abs(audio)) * 10 ** (floor_db / 20))
    return audio[loud[0] : loud[-1] + 1] if loud.size else audio


def _noise(rng: np.random.Generator, n: int, color: str) -> np.ndarray:
    """Unit-RMS white noise, or pink-ish noise (1/f power) shaped in the frequency domain."""
    noise = rng.standard_normal(n)
    if color == "pink" and n > 2:
        spectrum = np.fft.rfft(noise)
        freqs = np.fft.rfftfreq(n)
        spectrum[1:] /= np.sqrt(freqs[1:] / freqs[1])
        spectrum[0] = 0
        noise = np.fft.irfft(spectrum, n)
    return noise / (float(np.sqrt(np.mean(noise**2))) or 1.0)


def _write_tsvs(plans: list[ClipPlan], folder: Path, speech: dict[str, tuple[float, float]]) -> None:
    """One Common Voice-style TSV per split (no quoting: CV sentences contain quotes)."""
    for split, name in TSV_NAMES.items():
        lines = ["\t".join(TSV_COLUMNS)]
        for plan in (p for p in plans if p.split == split):
            gender = {"f": "female_feminine", "m": "male_masculine"}.get(plan.voice.partition("+")[2][:1], "")
            start, end = speech[plan.file]
            segments = json.dumps([[round(start, 3), round(end, 3), " ".join(plan.sentence.split())]], ensure_ascii=False)
            row = (plan.voice, plan.file, plan.sentence, "2", "0", "", gender, "synthetic", "gl", "", segments)
            lines.append("\t".join(" ".join(value.split()) for value in row))  # no tabs or newlines inside
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _describe(config: SyntheticConfig, key: dict, plans: list[ClipPlan], seconds: float) -> dict:
    settings = json.loads(json.dumps(dataclasses.asdict(config), default=str))
    splits = [*SPLITS, UNSEEN_SPLIT]
    return {
        "synthetic": True,
        "locale": "gl",
        "content_key": key,
        "config": settings,
        "counts": {split: sum(p.split == split for p in plans) for split in splits},
        "voices": {split: sorted({p.voice for p in plans if p.split == split}) for split in splits},
        "seen_voices": list(config.seen_voices),
        "unseen_voice": config.unseen_voice,
        "build_seconds": round(seconds, 1),
        "clips": [dataclasses.asdict(plan) for plan in plans],
    }


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """Swap the finished build in with renames; the old corpus is deleted only afterwards."""
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, old / "corpus")
    try:
        os.replace(staging, out_dir)
    except BaseException:
        if old is not None:
            os.replace(old / "corpus", out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------- long-form test audio


def long_form(corpus_dir: Path, split: str = "test", seconds: float = 180.0, seed: int = 0,
              pauses: tuple[float, float] = (0.5, 1.5)) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """One long recording made of a built corpus' clips of `split` (until `seconds`), joined
    with random pauses; returns (16 kHz audio, [(start, end, sentence)] of the speech in it).
    The times are exact (the corpus records where each clip's speech is), so segment times
    that a model predicts can be checked against them."""
    from galwhisper.data import load_rows

    rows = load_rows(f"cv:{corpus_dir}", [split]).get(split, [])
    if not rows:
        raise GalwhisperError(f"{corpus_dir}: no {split} clips to build long-form audio from")
    rng = np.random.default_rng(seed)
    used, clips, gaps, total = [], [], [], 0.0
    for row in rows:
        if total >= seconds:
            break
        gaps.append(float(rng.uniform(*pauses)))
        clips.append(load_audio(row.audio))
        used.append(row)
        total += round(gaps[-1] * SAMPLE_RATE) / SAMPLE_RATE + len(clips[-1]) / SAMPLE_RATE
    audio, starts = join_with_pauses(clips, gaps)
    truth = [(round(at + start, 3), round(at + end, 3), text)
             for row, clip, at in zip(used, clips, starts)
             for start, end, text in row.segments or [(0.0, len(clip) / SAMPLE_RATE, row.sentence)]]
    return audio, truth
