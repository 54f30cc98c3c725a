"""Validation WER against training minutes, for each training mode and setting, on the synthetic
corpus: the measurement `cpu-base` (the demo's preset) is chosen from.

Every configuration starts from the bundled Whisper base and trains on the demo's corpus (the whole
synthetic corpus: 617 training sentences in 52 espeak-ng voices) for the same time budget
(MINUTES of training steps, as `--max-minutes` does it: the step count is set from the measured
step time and the linear schedule ends there), batch 8 unless named, bf16 autocast where the CPU has bf16,
evaluating WER on the first 32 validation clips (the demo's setting) at a fixed step interval. A TrainerCallback sums the time of the training steps alone (not the
evaluations or checkpoints between them): both wall time and the process's CPU time / cores, as
other jobs on the machine inflate wall time. Preparation (packing, caching encoder states) is
timed apart. Printed: one row per evaluation, a summary per configuration (WER gained per minute
of training), and a PNG of the curves.

Run:  .venv/bin/python benchmarks/wer_per_minute.py [--quick] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from galwhisper.demo import DemoConfig  # noqa: E402

# name: (prepare settings, train settings); the rest is the cpu-base preset (lr 2e-4, batch 8,
# linear schedule ending at the last step the time budget allows).
DEMO = DemoConfig()
PACKED = dict(pack=True, pack_seconds=DEMO.pack_seconds, pack_min_seconds=DEMO.pack_min_seconds,
              pack_singles=DEMO.pack_singles)  # the demo's packing
CONFIGS = {
    "unpacked clips, full": ({}, dict(eval_steps=7)),
    "packed, full (cpu-base)": (PACKED, dict(eval_steps=7)),
    "packed, full, batch 4": (PACKED, dict(batch_size=4, eval_steps=14)),
    "packed, full, batch 2": (PACKED, dict(batch_size=2, eval_steps=28)),
    "packed, bottom 4 of 6 encoder layers cached": (dict(PACKED, cache_encoder=True, cache_encoder_layers=4),
                                                    dict(mode="cached-encoder", eval_steps=14)),
    "packed, decoder only (whole encoder cached)": (dict(PACKED, cache_encoder=True), dict(mode="cached-encoder", eval_steps=30)),
}
QUICK = ("unpacked clips, full", "packed, full (cpu-base)")
MINUTES = 3.0  # of training steps per configuration: about what the demo leaves training on 2 cores


class EvalTimer:
    """A TrainerCallback (duck-typed): training-step time (wall and CPU) at each evaluation."""

    def __init__(self, points: list):
        self.points, self.wall, self.cpu = points, 0.0, 0.0

    def __getattr__(self, name):
        if name.startswith("on_"):
            return lambda *a, **kw: None
        raise AttributeError(name)

    def on_step_begin(self, args, state, control, **kwargs):
        self.t, self.c = time.perf_counter(), time.process_time()

    def on_step_end(self, args, state, control, **kwargs):
        self.wall += time.perf_counter() - self.t
        self.cpu += time.process_time() - self.c

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.points.append({"step": state.global_step, "wall_s": round(self.wall, 1), "cpu_s": round(self.cpu / _common.CORES, 1),
                            "wer": (metrics or {}).get("eval_wer")})


def child(name: str) -> dict:
    import transformers

    from galwhisper.prepare import PrepareConfig, prepare
    from galwhisper.synthetic import SyntheticConfig
    from galwhisper.train import make_config, train

    prepare_settings, train_settings = CONFIGS[name]
    cache = _common.setup_env()
    corpus = SyntheticConfig(out_dir=cache / "demo-corpus", num_workers=_common.CORES)
    features = cache / ("wpm-" + "-".join(f"{k}={v}" for k, v in sorted(prepare_settings.items())).replace(".", "_") or "wpm-plain")
    started, cpu = time.perf_counter(), time.process_time()
    prepare(PrepareConfig(source=f"synthetic:{corpus.out_dir}", out_dir=features, synthetic=corpus, **prepare_settings), progress=False)
    prepare_s, prepare_cpu = time.perf_counter() - started, time.process_time() - cpu
    points: list = []
    original = transformers.Trainer.__init__

    def init(self, *a, **kw):
        original(self, *a, **kw)
        self.add_callback(EvalTimer(points))

    transformers.Trainer.__init__ = init
    out = cache / "wpm-run"
    shutil.rmtree(out, ignore_errors=True)
    summary = train(make_config("cpu-base", features=str(features), out=str(out), eval_on_start=True, max_minutes=MINUTES,
                                **train_settings), progress=False)
    shutil.rmtree(out, ignore_errors=True)
    return {"points": points, "prepare_s": prepare_s, "prepare_cpu_s": prepare_cpu, "precision": summary["precision"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    parser.add_argument("--only", nargs="+", choices=list(CONFIGS), help="these configurations only")
    parser.add_argument("--out", default="benchmarks/wer_per_minute.png", help="where the PNG goes")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    _common.setup_env()
    if args.child:
        return _common.emit(child(args.child))

    names = args.only or (list(QUICK) if args.quick else list(CONFIGS))
    results = {}
    for name in names:
        results[name] = _common.run_child("wer_per_minute.py", [name], name, timeout=3600)
        best = min(p["wer"] for p in results[name]["points"])
        print(f"  done: {name}: best validation WER {100 * best:.1f}%", flush=True)

    print()
    print(f"Validation WER (32 clips) against training minutes, {datetime.date.today()}, machine: {_common.machine()}")
    rows = [[name, p["step"], f"{p['wall_s'] / 60:.2f}", f"{p['cpu_s'] / 60:.2f}", f"{100 * p['wer']:.1f}"]
            for name, r in results.items() for p in r["points"]]
    print(_common.table(["configuration", "step", "train min (wall)", "train min (cpu)", "WER %"], rows))
    print()
    summary = []
    for name, r in results.items():
        start, last = r["points"][0], r["points"][-1]
        best = min(p["wer"] for p in r["points"])
        minutes = last["cpu_s"] / 60
        summary.append([name, f"{100 * start['wer']:.1f}", f"{100 * best:.1f}", f"{minutes:.2f}", f"{r['prepare_s'] / 60:.2f}",
                        f"{100 * (start['wer'] - best) / max(minutes, 1e-9):.1f}"])
    print(_common.table(["configuration", "WER % at 0", "best WER %", "train min (cpu)", "prepare min", "WER points / min"], summary))
    plot(results, Path(args.out))
    Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=1))
    print(f"curves: {args.out}")
    print(_common.quiet_summary())


def plot(results: dict, path: Path) -> None:
    from galwhisper import plots

    with plots.figure(path, size=(8, 4.5), title="Validation WER against training minutes (synthetic Galician)") as (ax,):
        for name, r in results.items():
            ax.plot([p["cpu_s"] / 60 for p in r["points"]], [100 * p["wer"] for p in r["points"]], "o-", label=name)
        ax.set(xlabel="training minutes (CPU time / cores)", ylabel="validation WER %")


if __name__ == "__main__":
    main()
