"""The bundled model both ways: CT2 -> transformers is exact, and the export goes back."""

from __future__ import annotations

import hashlib
import json

import ctranslate2
import numpy as np
import pytest
import torch

from galwhisper import convert, features, models
from galwhisper.audio import load_audio
from galwhisper.errors import GalwhisperError


@pytest.fixture(scope="module")
def hf_base():
    model, processor = models.load_hf("base")
    return model.eval(), processor


def test_bundled_model_is_joined_once_and_checked():
    folder = models.bundled_ct2_dir()
    data = (folder / "model.bin").read_bytes()
    assert len(data) == models.BUNDLED_SIZE
    assert hashlib.sha256(data).hexdigest() == models.BUNDLED_SHA256
    assert {"config.json", "tokenizer.json", "vocabulary.txt"} <= {p.name for p in folder.iterdir()}
    # No temp folder survives a successful join.
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".tmp-")]


def test_half_written_model_is_rebuilt():
    folder = models.bundled_ct2_dir()
    with open(folder / "model.bin", "r+b") as f:
        f.truncate(1000)  # as if a copy had died half-way
    assert (models.bundled_ct2_dir() / "model.bin").stat().st_size == models.BUNDLED_SIZE


def test_reader_sees_all_tensors():
    variables, aliases = convert.read_ct2_model(models.bundled_ct2_dir() / "model.bin")
    assert len(variables) == 212
    weights = {k: v for k, v in variables.items() if v.ndim >= 1}
    scalars = {k: int(v) for k, v in variables.items() if v.ndim == 0}  # configuration, not weights
    assert len(weights) == 203 and all(v.dtype == np.float16 for v in weights.values())
    assert scalars["encoder/num_heads"] == scalars["decoder/num_heads"] == 8
    assert aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}


def test_converted_model_config_and_tokenizer(hf_base):
    model, processor = hf_base
    assert sum(p.numel() for p in model.parameters()) == 72_593_920
    tok = processor.tokenizer
    assert len(tok) == model.config.vocab_size == 51865
    assert tok.convert_tokens_to_ids(["<|gl|>", "<|transcribe|>", "<|notimestamps|>", "<|0.00|>", "<|30.00|>"]) == [
        50319, 50359, 50363, 50364, 51864,
    ]
    gen = model.generation_config
    assert gen.lang_to_id["<|gl|>"] == 50319 and len(gen.lang_to_id) == 99
    assert gen.task_to_id == {"transcribe": 50359, "translate": 50358}
    assert gen.alignment_heads[0] == [3, 1] and len(gen.suppress_tokens) == 88
    assert tok.decode([50258, 50319, 50359, 50363, 2205, 50257], skip_special_tokens=True) == " Good"


def test_greedy_tokens_match_ctranslate2(hf_base, galician_clips):
    model, processor = hf_base
    ct2 = ctranslate2.models.Whisper(str(models.bundled_ct2_dir()), device="cpu", compute_type="float32")
    prompt = features.prompt_ids(processor.tokenizer, "gl")
    for clip in galician_clips:
        x = features.model_input(load_audio(clip))[None]
        storage = ctranslate2.StorageView.from_array(x)
        ct2_ids = ct2.generate(storage, [prompt], beam_size=1, max_length=200)[0].sequences_ids[0]
        ct2_encoded = np.array(ct2.encode(storage))
        with torch.inference_mode():
            hf_encoded = model.model.encoder(torch.from_numpy(x)).last_hidden_state.numpy()
            out = model.generate(torch.from_numpy(x), language="gl", task="transcribe", num_beams=1, max_new_tokens=200)
        hf_ids = [t for t in out[0].tolist() if t < processor.tokenizer.eos_token_id]
        assert hf_ids == ct2_ids, clip.name
        assert len(hf_ids) > 2
        assert np.abs(hf_encoded - ct2_encoded).max() < 2e-3


def test_round_trip_export_is_identical(tmp_path, galician_clips):
    from galwhisper.transcribe import TranscribeOptions, Transcriber

    exported = convert.export_ct2(models.hf_dir("base"), tmp_path / "ct2")
    original, _ = convert.read_ct2_model(models.bundled_ct2_dir() / "model.bin")
    again, _ = convert.read_ct2_model(exported / "model.bin")
    # The export may add configuration scalars a newer ctranslate2 knows; every original entry
    # must come back bit for bit.
    assert original.keys() <= again.keys()
    assert all(np.array_equal(original[k], again[k]) for k in original)
    options = TranscribeOptions(batch_size=1)
    first, second = Transcriber("base", compute_type="float32"), Transcriber(str(exported), compute_type="float32")
    for clip in galician_clips[:3]:
        assert first.transcribe(clip, options).text == second.transcribe(clip, options).text


def test_resolve_specs(tmp_path):
    assert models.resolve("base").kind == "ct2"
    assert models.resolve(str(models.hf_dir("base"))).kind == "hf"
    assert models.resolve("openai/whisper-small").kind == "hub"
    with pytest.raises(GalwhisperError, match="not found"):
        models.resolve(str(tmp_path / "nope"))
    with pytest.raises(GalwhisperError, match="neither model.bin"):
        models.resolve(str(tmp_path))  # an empty folder
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(GalwhisperError, match="describes a bert model, not Whisper"):
        models.resolve(str(tmp_path))


def test_hub_id_offline_fails_with_one_line():
    with pytest.raises(GalwhisperError) as info:
        models.load_hf("openai/whisper-small")
    message = str(info.value)
    assert "openai/whisper-small" in message and "hub" in message and "\n" not in message
