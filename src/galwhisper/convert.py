"""CTranslate2 <-> transformers for Whisper: reading model.bin, converting, exporting.

`read_ct2_model` is the inverse of ctranslate2's `ModelSpec._serialize`, `ct2_to_transformers`
the inverse of its Whisper converter (fused q|k|v split back, zero k-bias dropped, tied output
projection, a generation config and tokenizer built from the CT2 folder), and `export_ct2` is
ctranslate2's own TransformersConverter. Special tokens are looked up by name, never by id:
large-v3's tokenizer adds `<|yue|>`, which shifts every control token after it.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from galwhisper.errors import GalwhisperError, one_line
from galwhisper.files import atomic_dir, write_json_atomic

EOT, SOT = "<|endoftext|>", "<|startoftranscript|>"
TRAINED_FILE = "galwhisper.json"  # how galwhisper trained a model (e.g. with timestamps); travels with it


# ---------------------------------------------------------------------------------------------
# Reading CTranslate2's model.bin (inverse of ctranslate2/specs/model_spec.py `_serialize`)

_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_BF16 = 5


def read_ct2_model(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Variables (name -> array) and aliases (alias -> target) of a CTranslate2 model.bin."""
    data = memoryview(Path(path).read_bytes())
    try:
        return _parse_model_bin(data, path)
    except (struct.error, ValueError, KeyError, UnicodeDecodeError) as exc:
        raise GalwhisperError(f"{path}: damaged CTranslate2 model.bin ({one_line(exc, 80)})") from None


def check_model_bin(path: Path) -> None:
    """Refuse a model.bin that is not a CTranslate2 Whisper model, reading only its header."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    try:
        version = struct.unpack_from("<I", head, 0)[0]
        length = struct.unpack_from("<H", head, 4)[0]
        spec_name = bytes(head[6 : 6 + length - 1]).decode("utf-8")
    except (struct.error, UnicodeDecodeError):
        raise GalwhisperError(f"{path}: not a CTranslate2 model.bin (damaged or truncated header)") from None
    if not 1 <= version <= 100 or length > 200:
        raise GalwhisperError(f"{path}: not a CTranslate2 model.bin (damaged header)")
    if spec_name != "WhisperSpec":
        raise GalwhisperError(f"{path}: a {spec_name or 'unknown'} model, not Whisper")


def _parse_model_bin(data: memoryview, path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
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
        if len(raw) != nbytes:
            raise ValueError(f"variable {name} is cut short")
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
    tokenizer = _tokenizer_from_ct2(ct2_path, vocab_size)
    eot, sot = tokenizer.convert_tokens_to_ids([EOT, SOT])
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
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
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
        unk_token=EOT,
        bos_token=EOT,
        eos_token=EOT,
        pad_token=EOT,
    )
    # Every special token after <|endoftext|> (languages, tasks, ...) stays whole when decoding.
    specials = [t for t in json.loads((ct2_path / "tokenizer.json").read_text())["added_tokens"] if t.get("special")]
    eot_id = next((t["id"] for t in specials if t["content"] == EOT), None)
    if eot_id is None:
        raise GalwhisperError(f"{ct2_path}: tokenizer.json has no {EOT} token")
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [t["content"] for t in specials if t["id"] > eot_id]}
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
    preprocessor_config.json is always written: faster-whisper reads the number of mel bins
    from it (80, or 128 for large-v3), and without it feeds 80 bins to any model.
    """
    import ctranslate2.converters

    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        files = [f for f in ("tokenizer.json", "preprocessor_config.json", TRAINED_FILE)
                 if isinstance(source, Path) and (source / f).is_file()]
        try:
            converter = ctranslate2.converters.TransformersConverter(str(source), copy_files=files or None)
            converter.convert(str(tmp), quantization=quantization, force=True)
        except OSError as exc:
            if isinstance(source, str) and not Path(source).exists():
                raise hub_error(source, exc) from None
            raise
        if not (tmp / "preprocessor_config.json").is_file():
            write_json_atomic(tmp / "preprocessor_config.json", _preprocessor_config(_mel_bins(source)))
    return out_dir


def hub_error(spec: str, exc: Exception) -> GalwhisperError:
    return GalwhisperError(
        f"{spec}: cannot load from the Hugging Face hub (offline or unknown id: {type(exc).__name__}); "
        "use 'base' or a local model folder"
    )


def _mel_bins(source: Path | str) -> int:
    from transformers import WhisperConfig

    return int(WhisperConfig.from_pretrained(str(source)).num_mel_bins)


def _preprocessor_config(n_mels: int) -> dict:
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=n_mels).to_dict()
