"""Data-parallel training under torchrun on CPU (gloo): two processes, one run folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import GALICIAN
from families import build
from galwhisper.prepare import PrepareConfig, prepare

pytestmark = pytest.mark.slow
TORCHRUN = Path(sys.executable).parent / "torchrun"


@pytest.fixture(scope="module")
def tiny_model_and_features(galician_clips, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    model = build("tiny", folder / "model")
    rows = [(galician_clips[i % 5], GALICIAN[i % 5], "train") for i in range(8)]
    rows += [(galician_clips[i], GALICIAN[i], "validation") for i in range(2)]
    manifest = folder / "clips.tsv"
    manifest.write_text("path\tsentence\tsplit\n" + "".join(f"{p}\t{s}\t{t}\n" for p, s, t in rows), encoding="utf-8")
    prepare(PrepareConfig(source=f"manifest:{manifest}", out_dir=folder / "features", model=str(model)), progress=False)
    return model, folder / "features"


def torchrun_train(model: Path, features: Path, out: Path, steps: int, *extra: str) -> subprocess.CompletedProcess:
    command = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "galwhisper.cli", "train",
               "--features", str(features), "--out", str(out), "--model", str(model), "--max-steps", str(steps),
               "--eval-steps", "2", "--batch-size", "2", "--eval-batch-size", "1", "--warmup-steps", "0",
               "--learning-rate", "1e-4", "--precision", "fp32", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)


def test_torchrun_two_processes_one_run_folder_and_resume(tiny_model_and_features, tmp_path):
    model, features = tiny_model_and_features
    out = tmp_path / "run"
    first = torchrun_train(model, features, out, 2)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads((out / "train.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2
    assert (out / "best" / "model.safetensors").is_file() and (out / "best-ct2" / "model.bin").is_file()
    state = json.loads((out / "checkpoints" / "checkpoint-2" / "trainer_state.json").read_text())
    # 8 training clips, 2 per process per step: with two processes an epoch is 2 steps, not 4.
    assert state["epoch"] == pytest.approx(1.0)
    assert {p.name for p in (out / "checkpoints" / "checkpoint-2").glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
    evaluations = [e for e in state["log_history"] if "eval_wer" in e]
    assert [e["step"] for e in evaluations] == [0, 2]

    again = torchrun_train(model, features, out, 4, "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = json.loads((out / "train.json").read_text())
    assert resumed["steps"] == 4 and resumed["world_size"] == 2 and resumed["resumed_from"].endswith("checkpoint-2")
    steps = [int(line.split(",")[0]) for line in (out / "history.csv").read_text().splitlines()[1:] if line.split(",")[3]]
    assert steps == [0, 2, 4]
