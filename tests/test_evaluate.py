"""galwhisper evaluate: several models side by side, numbers checked with jiwer independently."""

from __future__ import annotations

import csv
import json

import jiwer
import pytest
from transformers.models.whisper.english_normalizer import BasicTextNormalizer

from conftest import GALICIAN, assert_one_line_error, run_cli, run_main, speak
from galwhisper import models
from galwhisper.evaluate import EvaluateConfig, evaluate


@pytest.fixture(scope="module")
def two_models():
    """The bundled CT2 model and its transformers conversion (exported to CT2 by evaluate)."""
    return ["base", str(models.hf_dir("base"))]


def test_side_by_side_matches_jiwer(tiny_prepared, two_models, tmp_path):
    out = tmp_path / "eval"
    results = evaluate(EvaluateConfig(models=two_models, data=str(tiny_prepared), split="test", out=str(out),
                                      json_path=str(tmp_path / "r.json")), progress=False)
    assert [r.spec for r in results] == two_models
    normalizer = BasicTextNormalizer()
    data = json.loads((tmp_path / "r.json").read_text())
    assert [m["spec"] for m in data["models"]] == two_models and data["synthetic"] is True
    for index, (result, entry) in enumerate(zip(results, data["models"]), start=1):
        rows = list(csv.DictReader(open(next(out.glob(f"utterances-{index}-*.tsv")), encoding="utf-8"), delimiter="\t"))
        refs = [r["reference"] for r in rows]
        hyps = [r["hypothesis"] for r in rows]
        norm = lambda t: " ".join(normalizer(t).split())  # noqa: E731
        assert entry["wer"] == pytest.approx(jiwer.wer([norm(r) for r in refs], [norm(h) for h in hyps]))
        assert entry["cer"] == pytest.approx(jiwer.cer([norm(r) for r in refs], [norm(h) for h in hyps]))
        assert entry["wer_raw"] == pytest.approx(jiwer.wer(refs, hyps))
        assert entry["utterances"] == len(rows) == 4
        for key in ("name", "cer_raw", "substitutions", "deletions", "insertions", "audio_seconds", "real_time_factor"):
            assert key in entry
        rates = [float(r["wer"]) for r in rows]
        assert rates == sorted(rates, reverse=True)  # worst first
    table = (out / "results.md").read_text()
    assert len([line for line in table.splitlines() if line.startswith("| ")]) == 3  # header + 2 models
    assert "whisper-base (bundled)" in table
    assert (out / "wer.png").read_bytes()[:4] == b"\x89PNG"


def test_manifest_source_is_evaluated_whole(tmp_path, galician_clips):
    manifest = tmp_path / "list.tsv"
    manifest.write_text("path\tsentence\n" + "".join(f"{c}\t{t}\n" for c, t in zip(galician_clips, GALICIAN)), encoding="utf-8")
    proc = run_cli("evaluate", "--model", "base", "--data", f"manifest:{manifest}", "--json", str(tmp_path / "m.json"))
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "m.json").read_text())
    assert data["split"] == "all" and data["models"][0]["utterances"] == 5
    assert 0 < data["models"][0]["wer"] < 3
    assert "| whisper-base (bundled) |" in proc.stdout


def test_bad_data_and_model_are_one_line_errors(tiny_prepared, tmp_path):
    assert_one_line_error(run_main("evaluate", "--model", "base", "--data", str(tmp_path)), "neither a prepared folder")
    assert_one_line_error(run_main("evaluate", "--model", str(tmp_path / "no"), "--data", str(tiny_prepared)), "model not found")
    assert_one_line_error(run_main("evaluate", "--model", "base", "--data", str(tiny_prepared), "--split", "nope"), "no prepared split")


# Clearly different lengths, so batching by length reorders them; English, which the bundled base
# transcribes well, so a hypothesis paired with the wrong clip shows as a high WER.
ENGLISH_SENTENCES = [
    "Good morning.",
    "The birch canoe slid on the smooth planks and came to rest by the old wooden dock near the lake.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish, and the juice of lemons makes fine punch for a summer party.",
]


@pytest.mark.parametrize("engine", ["ct2", "torch"])
def test_length_batches_keep_each_transcript_with_its_clip(tmp_path, engine):
    manifest = tmp_path / "en.tsv"
    clips = [speak(text, tmp_path / f"en{i}.wav", voice="en-us", speed=150) for i, text in enumerate(ENGLISH_SENTENCES)]
    manifest.write_text("path\tsentence\n" + "".join(f"{c}\t{t}\n" for c, t in zip(clips, ENGLISH_SENTENCES)), encoding="utf-8")
    out = tmp_path / "eval"
    evaluate(EvaluateConfig(models=["base"], data=f"manifest:{manifest}", language="en", batch_size=2, engine=engine,
                            out=str(out)), progress=False)
    rows = list(csv.DictReader(open(next(out.glob("utterances-1-*.tsv")), encoding="utf-8"), delimiter="\t"))
    assert sorted(r["reference"] for r in rows) == sorted(ENGLISH_SENTENCES)
    norm = lambda t: " ".join(BasicTextNormalizer()(t).split()) or "-"  # noqa: E731
    for row in rows:  # each transcript is far closer to its own clip's sentence than to any other
        own = jiwer.wer(norm(row["reference"]), norm(row["hypothesis"]))
        others = [jiwer.wer(norm(text), norm(row["hypothesis"])) for text in ENGLISH_SENTENCES if text != row["reference"]]
        assert own <= 0.5 and own < min(others) - 0.3, (row, own, others)


def test_decoding_attention_decodes_as_sdpa_does(tmp_path):
    """Greedy steps on the CPU take evaluate.decoding_attention (one query: matmul + softmax instead
    of PyTorch's CPU flash kernel). In fp32 the real base model writes the same transcripts of
    real speech both ways, in bf16 (what evaluation runs) they stay close, and generate_texts
    leaves the model on SDPA, as training's validation needs."""
    import numpy as np
    import torch
    from datasets import Dataset

    from galwhisper import evaluate as ev
    from galwhisper.audio import SAMPLE_RATE, load_audio
    from galwhisper.features import log_mel

    clips = [load_audio(speak(text, tmp_path / f"en{i}.wav", voice="en-us", speed=150)) for i, text in enumerate(ENGLISH_SENTENCES)]
    dataset = Dataset.from_dict({"seconds": [len(a) / SAMPLE_RATE for a in clips],
                                 "input_features": [log_mel(a).T.astype(np.float32) for a in clips]})
    model, processor = models.load_hf("base")
    model.generation_config.forced_decoder_ids = None
    calls = []
    steps = lambda *a, **k: calls.append(a[1].shape[2]) or ev.decoding_attention(*a, **k)  # noqa: E731

    def texts(attention: str, dtype=torch.float32) -> list[str]:
        model.to(dtype)
        model.set_attn_implementation(attention)
        try:
            return ev.generate_texts(model, processor.tokenizer, dataset, "en", "transcribe", batch_size=2, max_new_tokens=64)
        finally:
            assert model.config._attn_implementation == attention  # put back after decoding

    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register("sdpa_counted", steps)
    AttentionMaskInterface.register("sdpa_counted", sdpa_mask)
    reference = texts("eager")  # eager is left alone: the plain matmul-softmax throughout
    assert texts("sdpa") == reference
    assert texts("sdpa_counted") == reference and calls.count(1) > 100  # the one-query path ran
    norm = lambda t: " ".join(BasicTextNormalizer()(t).split())  # noqa: E731
    in_bf16 = texts("sdpa", torch.bfloat16)
    assert jiwer.wer([norm(t) for t in ENGLISH_SENTENCES], [norm(t) for t in in_bf16]) <= 0.15
