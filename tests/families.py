"""Randomly initialised Whisper models with each released family's real interface, built offline.

The weights of whisper-small ... large-v3-turbo cannot be downloaded here, so the tests build
models with each family's real dimensions (width, heads, feed-forward size, mel bins and the
vocabulary: large-v3 and turbo have 128 mel bins and a tokenizer with `<|yue|>` inserted after
`<|su|>`, which shifts every control and timestamp token by one, and `<|nocaptions|>` renamed
`<|nospeech|>`), with the depth reduced so that every stage runs in seconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from galwhisper import models

# family: (d_model, heads, ffn, mel bins, large-v3 vocabulary, encoder layers, decoder layers)
# Depth is reduced to 1 (turbo keeps its asymmetry: a deeper encoder than decoder).
FAMILIES = {
    "tiny": (384, 6, 1536, 80, False, 1, 1),
    "base": (512, 8, 2048, 80, False, 1, 1),
    "small": (768, 12, 3072, 80, False, 1, 1),
    "medium": (1024, 16, 4096, 80, False, 1, 1),
    "large-v2": (1280, 20, 5120, 80, False, 1, 1),
    "large-v3": (1280, 20, 5120, 128, True, 1, 1),
    "large-v3-turbo": (1280, 20, 5120, 128, True, 2, 1),
}


def v3_tokenizer_json(base: dict) -> dict:
    """large-v3's tokenizer.json from the multilingual base one: <|yue|> after <|su|>."""
    data = json.loads(json.dumps(base))
    su = next(t["id"] for t in data["added_tokens"] if t["content"] == "<|su|>")
    for token in data["added_tokens"]:
        if token["id"] > su:
            token["id"] += 1
        if token["content"] == "<|nocaptions|>":
            token["content"] = "<|nospeech|>"
    yue = dict(next(t for t in data["added_tokens"] if t["content"] == "<|su|>"), id=su + 1, content="<|yue|>")
    data["added_tokens"] = sorted([*data["added_tokens"], yue], key=lambda t: t["id"])
    for special in (data.get("post_processor") or {}).get("special_tokens", {}).values():
        special["ids"] = [i + 1 if i > su else i for i in special["ids"]]
    return data


def build(family: str, folder: Path, seed: int = 0) -> Path:
    """Save a randomly initialised `family` model (transformers layout, with its processor)."""
    import torch
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration,
                              WhisperProcessor, WhisperTokenizerFast)
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    d_model, heads, ffn, mels, v3, enc_layers, dec_layers = FAMILIES[family]
    folder.mkdir(parents=True, exist_ok=True)
    base = Path(models.hf_dir("base"))
    for name in ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt",
                 "normalizer.json"):
        if (base / name).is_file():
            shutil.copy(base / name, folder / name)
    tokens = json.loads((base / "tokenizer.json").read_text())
    (folder / "tokenizer.json").write_text(json.dumps(v3_tokenizer_json(tokens) if v3 else tokens))
    for name in ("added_tokens.json", "vocab.json", "merges.txt"):  # the fast tokenizer.json is the one truth
        (folder / name).unlink(missing_ok=True)
    if v3:
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            if (folder / name).is_file():
                (folder / name).write_text((folder / name).read_text().replace("<|nocaptions|>", "<|nospeech|>"))
    tokenizer = WhisperTokenizerFast.from_pretrained(folder)
    ids = lambda *names: tokenizer.convert_tokens_to_ids(list(names))  # noqa: E731
    eot, sot, notimestamps = ids("<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>")
    languages = [code for code in LANGUAGES if v3 or code != "yue"]
    config = WhisperConfig(
        vocab_size=len(tokenizer), num_mel_bins=mels, d_model=d_model, encoder_attention_heads=heads,
        decoder_attention_heads=heads, encoder_ffn_dim=ffn, decoder_ffn_dim=ffn, encoder_layers=enc_layers,
        decoder_layers=dec_layers, decoder_start_token_id=sot, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
        max_source_positions=1500, max_target_positions=448, suppress_tokens=[], begin_suppress_tokens=[eot],
    )  # fmt: skip
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, max_length=448,
        lang_to_id={f"<|{code}|>": tokenizer.convert_tokens_to_ids(f"<|{code}|>") for code in languages},
        task_to_id=dict(zip(("transcribe", "translate"), ids("<|transcribe|>", "<|translate|>"))),
        is_multilingual=True, no_timestamps_token_id=notimestamps, prev_sot_token_id=ids("<|startofprev|>")[0],
        max_initial_timestamp_index=50, suppress_tokens=[], begin_suppress_tokens=[eot],
    )  # fmt: skip
    model.save_pretrained(folder)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=mels), tokenizer).save_pretrained(folder)
    return folder
