"""Feature preparation speed: `galwhisper.prepare` vs the Hugging Face fine-tuning blog recipe.

Same N clips (200, --quick 40: the first N train clips of the built-in synthetic corpus, 16 kHz
mp3 in Common Voice layout), same machine, back-to-back fresh processes:

  (a) galwhisper: `prepare(PrepareConfig(source="cv:DIR", out_dir=..., num_proc=2,
      max_per_split=N))`: PyAV decoding + faster-whisper's log-mel of the unpadded audio
      (float16, real length) + labels, in a 2-process pool, then save_to_disk;
  (b) the blog recipe ("Fine-Tune Whisper For Multilingual ASR with Transformers"):
      `Dataset.from_dict({"audio": paths, "sentence": sentences})`,
      `cast_column("audio", Audio(sampling_rate=16000))` (decoded by torchcodec),
      `map(prepare_dataset, remove_columns=..., num_proc=2)` where prepare_dataset is the blog's
      (`feature_extractor(audio["array"], sampling_rate=...).input_features[0]`,
      `tokenizer(batch["sentence"]).input_ids`, with WhisperFeatureExtractor + WhisperTokenizer
      loaded from models.hf_dir("base")), then save_to_disk.

Each side is timed from the start of its work (libraries already imported) to the end of
save_to_disk, output folders start empty (no reuse, no datasets cache). Printed: clips/s, the
ratio, and the size on disk of each output folder. num_proc is 2 on both sides (2 cores); the
default run also measures the recipe with num_proc=1 for reference.

If torchcodec cannot decode here, the recipe falls back to `Audio(decode=False)` + soundfile
decoding inside prepare_dataset, and the output says so.

Run:  .venv/bin/python benchmarks/prepare_speed.py [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def child_galwhisper(corpus: Path, n: int, out: Path) -> dict:
    from datasets.utils.logging import disable_progress_bar
    import transformers  # noqa: F401  (imported before the clock starts, as on the recipe side)

    from galwhisper.prepare import PrepareConfig, prepare

    disable_progress_bar()
    t = time.perf_counter()
    summary = prepare(PrepareConfig(source=f"cv:{corpus}", out_dir=out, splits=["train"], max_per_split=n,
                                    num_proc=2), progress=False)
    wall = time.perf_counter() - t
    return {"wall_s": wall, "clips": summary["splits"]["train"]["clips"], "decoder": "PyAV (galwhisper.audio)"}


def child_recipe(corpus: Path, n: int, out: Path, num_proc: int) -> dict:
    import numpy as np
    from datasets import Audio, Dataset
    from datasets.utils.logging import disable_progress_bar
    from transformers import WhisperFeatureExtractor, WhisperTokenizer

    from galwhisper import models

    disable_progress_bar()
    rows = _common.cv_rows(corpus)[:n]
    model_dir = models.hf_dir("base")
    decoder = "torchcodec (datasets Audio)"
    try:  # does torchcodec decode here?
        probe = Dataset.from_dict({"audio": [str(rows[0][0])]}).cast_column("audio", Audio(sampling_rate=16000))
        assert np.asarray(probe[0]["audio"]["array"]).size > 0
        use_torchcodec = True
    except Exception as exc:  # noqa: BLE001
        use_torchcodec, decoder = False, f"soundfile (torchcodec failed: {type(exc).__name__}: {str(exc)[:80]})"

    t = time.perf_counter()
    feature_extractor = WhisperFeatureExtractor.from_pretrained(model_dir)
    tokenizer = WhisperTokenizer.from_pretrained(model_dir, language="Galician", task="transcribe")
    dataset = Dataset.from_dict({"audio": [str(p) for p, _ in rows], "sentence": [s for _, s in rows]})
    if use_torchcodec:
        dataset = dataset.cast_column("audio", Audio(sampling_rate=16000))
    else:
        dataset = dataset.cast_column("audio", Audio(decode=False))

    def prepare_dataset(batch):
        audio = batch["audio"]
        if not use_torchcodec:
            import soundfile as sf

            array, rate = sf.read(audio["path"], dtype="float32")
            audio = {"array": array, "sampling_rate": rate}
        # compute log-Mel input features from input audio array
        batch["input_features"] = feature_extractor(audio["array"], sampling_rate=audio["sampling_rate"]).input_features[0]
        # encode target text to label ids
        batch["labels"] = tokenizer(batch["sentence"]).input_ids
        return batch

    dataset = dataset.map(prepare_dataset, remove_columns=dataset.column_names, num_proc=num_proc)
    dataset.save_to_disk(str(out))
    wall = time.perf_counter() - t
    return {"wall_s": wall, "clips": len(dataset), "decoder": decoder}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 clips (< 2 min)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--side", choices=("galwhisper", "recipe"), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--num-proc", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cache = _common.setup_env()
    if args.child:
        out = Path(args.out)
        shutil.rmtree(out, ignore_errors=True)  # here, not in the parent: a repeated run must not reuse it
        if args.side == "galwhisper":
            result = child_galwhisper(Path(args.corpus), args.n, out)
        else:
            result = child_recipe(Path(args.corpus), args.n, out, args.num_proc)
        result["peak_rss_mb"] = _common.peak_rss_mb()
        result["peak_worker_mb"] = _common.peak_rss_mb(children=True)
        return _common.emit(result)

    n = 40 if args.quick else 200
    corpus = _common.corpus(200)
    from galwhisper import models

    models.hf_dir("base")  # conversion cached before anything is timed
    seconds = sum(__import__("soundfile").info(str(p)).duration for p, _ in _common.cv_rows(corpus)[:n])
    print(f"{n} clips ({seconds:.0f} s of audio) from {corpus}; machine: {_common.machine()}", flush=True)

    sides = [("galwhisper prepare (num_proc 2)", "galwhisper", 2, []),
             ("HF blog recipe (map num_proc 2)", "recipe", 2, [])]
    if not args.quick:
        sides += [("HF blog recipe (map num_proc 1)", "recipe", 1, [])]
    results = {}
    for label, side, num_proc, extra in sides:
        out = cache / f"prepare-bench-{side}-{num_proc}"
        r = _common.run_child("prepare_speed.py", ["--side", side, "--n", str(n), "--num-proc", str(num_proc),
                                                    "--corpus", str(corpus), "--out", str(out), *extra], label)
        r["disk_mb"] = _common.dir_size_mb(out)
        results[label] = r
        print(f"  done: {label}: {r['wall_s']:.1f} s", flush=True)

    recipe = results["HF blog recipe (map num_proc 2)"]
    gw = results["galwhisper prepare (num_proc 2)"]
    rows = [[label, r["clips"], f"{r['wall_s']:.1f}", f"{r['clips'] / r['wall_s']:.1f}",
             f"{(r['clips'] / r['wall_s']) / (recipe['clips'] / recipe['wall_s']):.2f}x", f"{r['disk_mb']:.1f}",
             f"{r['peak_rss_mb']:.0f} / {r['peak_worker_mb']:.0f}", r["decoder"]] for label, r in results.items()]
    print()
    print(f"Preparing {n} clips, {datetime.date.today()}, machine: {_common.machine()}")
    print(_common.table(["pipeline", "clips", "wall s", "clips/s", "vs recipe", "disk MB", "peak MB main / worker", "decoder"], rows))
    speed = (gw["clips"] / gw["wall_s"]) / (recipe["clips"] / recipe["wall_s"])
    print()
    print(f"ratio galwhisper / blog recipe: {speed:.2f}x clips/s (target >= 2x: {'met' if speed >= 2 else 'NOT met'}); "
          f"output {recipe['disk_mb'] / gw['disk_mb']:.1f}x smaller on disk "
          f"({gw['disk_mb']:.1f} MB vs {recipe['disk_mb']:.1f} MB)")
    print(_common.quiet_summary())


if __name__ == "__main__":
    main()
