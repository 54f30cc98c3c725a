"""galwhisper train: a real short run of the bundled base in every mode, kill and resume, export."""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import assert_one_line_error, run_cli, run_main
from galwhisper import models
from galwhisper.errors import GalwhisperError
from galwhisper.prepare import load_split
from galwhisper.train import COMPLETE, build_model, make_config, train

QUICK = dict(max_steps=2, eval_steps=2, batch_size=4, eval_batch_size=4, max_eval_samples=2, warmup_steps=0,
             learning_rate=1e-4, logging_steps=1, generation_max_tokens=24)


@pytest.fixture(scope="module")
def base_weights():
    """The bundled base as transformers weights (what every mode starts from), name -> tensor."""
    model, _ = models.load_hf("base")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed(state: dict, base: dict, prefix: str) -> list[str]:
    return [k for k, v in state.items() if k.startswith(prefix) and not torch.equal(v, base[k])]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["full", "freeze-encoder", "cached-encoder", "lora"])
def test_each_mode_trains_what_it_says_and_exports(tiny_prepared, tmp_path, mode, base_weights):
    """Two steps in each mode (no step-0 evaluation, so best/ holds the trained weights): the
    weights each mode may change changed, the others are bit-for-bit the base's."""
    run = tmp_path / mode
    config = make_config(None, features=str(tiny_prepared), out=str(run), mode=mode, eval_on_start=False, **QUICK)
    summary = train(config, progress=False)
    assert summary["steps"] == 2 and summary["best_step"] == 2
    assert (run / "best" / "model.safetensors").is_file() and (run / "best-ct2" / "model.bin").is_file()
    assert (run / "best" / "generation_config.json").is_file() and (run / "best" / "tokenizer.json").is_file()
    history = list(csv.DictReader(open(run / "history.csv")))
    assert [int(r["step"]) for r in history if r["wer"]] == [2]
    assert all(float(r["train_loss"]) > 0 for r in history if r["train_loss"])
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert list((run / "tensorboard").rglob("events.out.tfevents.*"))

    state = models.load_hf(str(run / "best"))[0].state_dict()
    assert set(state) == set(base_weights)  # LoRA merged back: a plain Whisper model
    encoder, decoder = changed(state, base_weights, "model.encoder."), changed(state, base_weights, "model.decoder.")
    assert decoder, "the decoder did not change"
    if mode in ("freeze-encoder", "cached-encoder"):
        assert encoder == [], f"a frozen encoder changed: {encoder[:3]}"
    else:
        assert encoder, "the encoder did not change"
    if mode == "lora":  # merged adapters touch only the adapted linear layers, never norms or embeddings
        assert all(k.endswith("proj.weight") or ".fc" in k for k in encoder + decoder), (encoder + decoder)[:5]


def test_lora_trains_only_adapter_weights(tiny_prepared):
    model, _ = build_model(make_config(None, features=str(tiny_prepared), out="unused", mode="lora"))
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert any("encoder" in n for n in trainable) and any("decoder" in n for n in trainable)


def test_cached_encoder_needs_cached_outputs(tmp_path):
    """Features prepared without --cache-encoder are refused by cached-encoder mode, in one line."""
    from conftest import GALICIAN, speak
    from galwhisper.prepare import PrepareConfig, prepare

    clips = [speak(t, tmp_path / f"c{i}.wav") for i, t in enumerate(GALICIAN[:2])]
    manifest = tmp_path / "m.tsv"
    manifest.write_text("path\tsentence\tsplit\n" + f"{clips[0]}\t{GALICIAN[0]}\ttrain\n{clips[1]}\t{GALICIAN[1]}\tvalidation\n")
    prepare(PrepareConfig(source=f"manifest:{manifest}", out_dir=tmp_path / "f"), progress=False)
    proc = run_main("train", "--features", str(tmp_path / "f"), "--out", str(tmp_path / "r"), "--mode", "cached-encoder")
    assert_one_line_error(proc, "has no cached encoder outputs", "--cache-encoder")
    assert not (tmp_path / "r" / "checkpoints").exists()


@pytest.mark.slow
def test_full_run_history_agrees_with_trainer_log_and_export_matches(tiny_prepared, tmp_path):
    from galwhisper.transcribe import TranscribeOptions, Transcriber

    run = tmp_path / "run"
    cfg = make_config(None, features=str(tiny_prepared), out=str(run), mode="full", **dict(QUICK, max_steps=4, learning_rate=3e-4))
    summary = train(cfg, progress=False)
    checkpoint = summary["best_checkpoint"]
    state = json.loads(open(os.path.join(checkpoint, "trainer_state.json")).read())
    evals = {e["step"]: e for e in state["log_history"] if "eval_wer" in e}
    rows = {int(r["step"]): r for r in csv.DictReader(open(run / "history.csv")) if r["wer"]}
    for step, entry in evals.items():
        assert float(rows[step]["wer"]) == pytest.approx(entry["eval_wer"])
    assert summary["best_wer"] == pytest.approx(min(float(r["wer"]) for r in rows.values()))
    # The CT2 export transcribes like the transformers model it came from (greedy). The export
    # stores float16 like the bundled model, so compare with best/ rounded to float16: a model
    # trained 4 steps is fragile enough for rounding alone to flip a token.
    corpus = tiny_prepared.parent / "corpus" / "clips"
    clips = sorted(corpus.glob("*test_0*.mp3"))[:3]
    model, processor = models.load_hf(str(run / "best"))
    model.half().float().save_pretrained(tmp_path / "rounded")
    processor.save_pretrained(tmp_path / "rounded")
    hf = Transcriber(str(tmp_path / "rounded"), backend="transformers")
    ct2 = Transcriber(str(run / "best-ct2"), compute_type="float32")
    options = TranscribeOptions(batch_size=1)
    for clip in clips:
        assert hf.transcribe(clip, options).text.strip() == ct2.transcribe(clip, options).text.strip()


@pytest.mark.slow
def test_sigkill_and_resume_completes_history(tiny_prepared, tmp_path):
    run = tmp_path / "killed"
    args = ["train", "--features", str(tiny_prepared), "--out", str(run), "--mode", "cached-encoder", "--max-steps", "6",
            "--eval-steps", "2", "--batch-size", "4", "--eval-batch-size", "4", "--max-eval-samples", "2",
            "--warmup-steps", "0", "--learning-rate", "1e-4"]
    proc = subprocess.Popen([sys.executable, "-m", "galwhisper.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (run / "checkpoints" / "checkpoint-2" / COMPLETE).is_file():
        assert proc.poll() is None, "training ended before it could be killed"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "train.json").exists()
    again = run_cli("train", *args[1:], "--resume")
    assert again.returncode == 0, again.stderr
    summary = json.loads((run / "train.json").read_text())
    assert summary["steps"] == 6 and "checkpoint-" in summary["resumed_from"]
    steps = [int(r["step"]) for r in csv.DictReader(open(run / "history.csv")) if r["wer"]]
    assert steps == [0, 2, 4, 6]


def test_existing_run_needs_resume(tiny_prepared, tmp_path):
    run = tmp_path / "r"
    (run / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    (run / "checkpoints" / "checkpoint-2" / COMPLETE).write_text("2")
    with pytest.raises(GalwhisperError, match="--resume"):
        train(make_config(None, features=str(tiny_prepared), out=str(run), **QUICK), progress=False)


def test_nan_loss_stops_with_a_clear_message(tiny_prepared, tmp_path):
    run = tmp_path / "nan"
    proc = run_cli("train", "--features", str(tiny_prepared), "--out", str(run), "--mode", "cached-encoder",
                   "--max-steps", "6", "--eval-steps", "3", "--batch-size", "4", "--max-eval-samples", "2",
                   "--learning-rate", "1e12", "--warmup-steps", "0", "--precision", "fp32")
    assert_one_line_error(proc, "training loss became")


def test_features_for_another_model_are_refused(tiny_prepared, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_prepared, other)
    info = json.loads((other / "prepare.json").read_text())
    info["model"]["n_mels"] = 128
    (other / "prepare.json").write_text(json.dumps(info))
    proc = run_main("train", "--features", str(other), "--out", str(tmp_path / "x"), "--max-steps", "1")
    assert_one_line_error(proc, "n_mels", "prepare again")


def test_missing_features_folder(tmp_path):
    proc = run_main("train", "--features", str(tmp_path / "nothing"), "--out", str(tmp_path / "x"))
    assert_one_line_error(proc, "not a prepared folder")


def test_collator_trains_timestamps_at_the_given_rate(tiny_prepared):
    """A timed sample is trained on its timestamped label with probability timestamp_rate; the
    prompt is never scored: three tokens of a timed label (no <|notimestamps|>), four otherwise."""
    from galwhisper.train import Collator

    tokenizer = models.load_hf("base")[1].tokenizer
    notimestamps, first_time = tokenizer.convert_tokens_to_ids(["<|notimestamps|>", "<|0.00|>"])
    rows = [dict(r) for r in load_split(tiny_prepared, "train").select(range(8))]
    assert all(len(r["timed_labels"]) for r in rows)  # the synthetic corpus knows its speech times

    def batch(rate: float, seed: int = 0):
        return Collator(4, notimestamps, tokenizer.pad_token_id, False, rate, seed)(rows)

    always, never = batch(1.0)["labels"], batch(0.0)["labels"]
    assert (always[:, :2] == -100).all() and (always[:, 2] >= first_time).all()  # first target: the start time
    assert (never[:, :3] == -100).all() and (never[:, 3] < notimestamps).all()  # first target: a text token
    assert not (never >= first_time).any()
    timed = [(batch(0.3, seed)["labels"][:, 2] >= first_time).float().mean().item() for seed in range(40)]
    assert 0.2 < sum(timed) / len(timed) < 0.4


def test_precision_follows_the_hardware():
    from galwhisper.models import cpu_has_bf16
    from galwhisper.train import choose_precision

    assert choose_precision("auto", cuda=True, cuda_bf16=True, cpu_bf16=False) == "bf16"  # A100, H100, ...
    assert choose_precision("auto", cuda=True, cuda_bf16=False, cpu_bf16=True) == "fp16"  # T4, V100: with loss scaling
    assert choose_precision("auto", cuda=False, cuda_bf16=False, cpu_bf16=True) == "bf16"  # AMX / AVX512-BF16 CPUs
    assert choose_precision("auto", cuda=False, cuda_bf16=False, cpu_bf16=False) == "fp32"
    assert choose_precision("fp32", cuda=True, cuda_bf16=True, cpu_bf16=True) == "fp32"  # an explicit choice is kept
    with pytest.raises(GalwhisperError, match="--precision fp16: needs a CUDA GPU"):
        choose_precision("fp16", cuda=False, cuda_bf16=False, cpu_bf16=True)
    assert cpu_has_bf16("flags : fpu sse avx512f avx512_bf16 amx_tile") and not cpu_has_bf16("flags : fpu sse avx2")


@pytest.fixture(scope="module")
def tiny_model_features(galician_clips, tmp_path_factory):
    """A tiny random Whisper (fast steps) and the Galician clips prepared for it: (model, features)."""
    import families
    from conftest import GALICIAN
    from galwhisper.prepare import PrepareConfig, prepare

    folder = tmp_path_factory.mktemp("tiny-model")
    model = families.build("tiny", folder / "model")
    manifest = folder / "m.tsv"
    manifest.write_text("path\tsentence\tsplit\n" + "".join(f"{c}\t{t}\t{s}\n" for c, t, s in zip(
        galician_clips, GALICIAN, ["train", "train", "train", "train", "validation"])), encoding="utf-8")
    prepare(PrepareConfig(source=f"manifest:{manifest}", out_dir=folder / "f", model=str(model)), progress=False)
    return model, folder / "f"


@pytest.mark.parametrize("validate", [True, False])
def test_time_budget_sets_the_steps_from_measured_speed(tiny_model_features, tmp_path, validate):
    """--max-minutes: after timing the first steps, training stops where the budget ends (well
    before max_steps here) and the linear schedule has decayed to zero by then; the last step is
    validated, unless the run has no validation (as the demo trains)."""
    model, features = tiny_model_features
    config = make_config(None, features=str(features), out=str(tmp_path / "run"), model=str(model), max_steps=500,
                         max_minutes=0.5, eval_steps=500, batch_size=2, eval_batch_size=1, warmup_steps=1,
                         learning_rate=1e-4, logging_steps=1, generation_max_tokens=4, eval_on_start=False,
                         validate=validate)
    summary = train(config, progress=False)
    assert 6 <= summary["steps"] < 500
    state = json.loads((tmp_path / "run" / "checkpoints" / f"checkpoint-{summary['steps']}" / "trainer_state.json").read_text())
    rates = [e["learning_rate"] for e in state["log_history"] if "learning_rate" in e]
    assert rates[-1] < 0.25 * max(rates)  # decayed towards zero at the budget's last step
    if validate:
        assert summary["best_step"] == summary["steps"]  # the last step was evaluated
    else:
        assert summary["best_step"] is None and not any("eval_loss" in e for e in state["log_history"])
    with pytest.raises(GalwhisperError, match="--lr-scheduler cosine: a time budget"):
        make_config(None, max_minutes=1, lr_scheduler="cosine")


def _train_against_budget(step_seconds, gap_seconds: float = 0.0, resumed_at: int = 0):
    """Run a 3-s TimeBudget over sleeping steps (`step_seconds(step)` each, `gap_seconds`
    between them), as GalwhisperTrainer drives it; (the budget, wall seconds it took)."""
    from transformers import TrainerControl, TrainerState

    from galwhisper.trainer import TimeBudget

    budget, args = TimeBudget(minutes=0.05, warmup=0), argparse.Namespace(eval_strategy="no")
    budget.steps = 500  # as GalwhisperTrainer sets it until the first steps are timed
    state, control = TrainerState(max_steps=500, global_step=resumed_at), TrainerControl()
    started = time.perf_counter()
    budget.on_train_begin(args, state, control)
    while not control.should_training_stop:
        budget.on_step_begin(args, state, control)
        time.sleep(step_seconds(state.global_step))
        state.global_step += 1
        budget.on_step_end(args, state, control)
        time.sleep(gap_seconds)  # data loading, logging
    return budget, time.perf_counter() - started


@pytest.mark.parametrize("resumed_at", [0, 10])
def test_time_budget_counts_the_time_between_steps(resumed_at):
    """The budget is wall time: steps of 0.05 s with 0.05 s of data loading and logging between
    them fit a 3-s budget 30 times, not 60; a run resumed at step 10 counts those steps too."""
    budget, seconds = _train_against_budget(lambda step: 0.05, gap_seconds=0.05, resumed_at=resumed_at)
    assert 26 <= budget.steps <= 31, budget.steps
    assert seconds <= 3.0 - resumed_at * 0.1 + 0.3


def test_time_budget_follows_a_machine_that_slows_down(capsys):
    """Steps that take 0.05 s at first and 0.1 s after the 5th: the plan made after 3 steps
    (~60 steps in 3 s) is renewed as they slow, and training ends within its 3 s."""
    budget, seconds = _train_against_budget(lambda step: 0.05 if step < 5 else 0.1)
    assert seconds <= 3.0 + 0.15
    assert budget.steps < 40
    assert capsys.readouterr().out.count("steps fit the 0.05-minute budget") == 1  # the first plan, said once


def test_without_validation_the_last_weights_are_kept(tiny_model_features, tmp_path):
    """--no-validation (what the demo trains with): no evaluation at any step, even where
    eval_steps says so, and no validation split needed; best/ is the last step's weights, still
    checkpointed for --resume, and the run says so in its summary, history and card."""
    from safetensors.torch import load_file

    model, prepared = tiny_model_features
    features = tmp_path / "features"
    shutil.copytree(prepared, features, ignore=shutil.ignore_patterns("validation"))
    run = tmp_path / "run"
    proc = run_cli("train", "--features", str(features), "--out", str(run), "--model", str(model), "--no-validation",
                   "--max-steps", "3", "--eval-steps", "1", "--batch-size", "2", "--warmup-steps", "0", "--logging-steps", "1")
    assert proc.returncode == 0, proc.stderr
    assert "no validation: the last weights (step 3)" in proc.stdout
    summary = json.loads((run / "train.json").read_text())
    assert summary["steps"] == 3 and summary["best_wer"] is None and summary["config"]["validate"] is False
    history = list(csv.DictReader(open(run / "history.csv")))
    assert [r["eval_loss"] for r in history] == [""] * 3 and all(float(r["train_loss"]) > 0 for r in history)
    kept, last = load_file(run / "best" / "model.safetensors"), load_file(run / "checkpoints" / "checkpoint-3" / "model.safetensors")
    assert all(torch.equal(kept[k], last[k]) for k in last)
    assert (run / "checkpoints" / "checkpoint-3" / COMPLETE).is_file()
    assert "no validation: the last weights (step 3)" in (run / "best" / "README.md").read_text()
    assert_one_line_error(run_main("train", "--features", str(features), "--out", str(tmp_path / "x"), "--no-validation",
                                   "--early-stopping", "2"), "--early-stopping 2", "--no-validation")

