"""Long-form transcription speed: galwhisper (faster-whisper / CTranslate2) vs transformers' pipeline.

What is compared, on the same audio and the same weights (the bundled Whisper base; the
transformers side loads galwhisper's exact conversion of it, `models.hf_dir("base")`):

  (a) galwhisper: `Transcriber("base", compute_type="int8", cpu_threads=2)` with
      `TranscribeOptions(language="gl", beam_size=1)` and galwhisper's current default batch size
      (16 since commit 1ce4c5c; batch 8 is measured too), i.e. faster-whisper's batched pipeline
      over windows cut at pauses by Silero VAD;
  (b) transformers: `pipeline("automatic-speech-recognition", model=hf_dir("base"),
      chunk_length_s=30, batch_size=8, device="cpu")`, greedy
      (generate_kwargs language="gl", task="transcribe", num_beams=1), torch threads = 2.

The audio is >= 5 minutes (--quick: ~100 s) of synthetic Galician speech: clips of the built-in
synthetic corpus (galwhisper.synthetic, espeak-ng voices) joined with 0.5-1.0 s pauses into one
long recording; the reference is the clips' sentences in order. Each engine config runs in its
own fresh process, back to back: model load (timed apart), one untimed warm-up on the first 20 s,
then the timed transcription of the whole recording (audio already decoded, for both). WER/CER
(galwhisper.metrics.error_rates, Whisper-normalised) of each output against the reference shows
that the speed is not bought with garbage. galwhisper tunings (batch size 4/8/16, compute type
int8 / int8_float32, and the sequential batch_size=1 path) are measured in the same run.

Run:  .venv/bin/python benchmarks/transcribe_speed.py [--quick]
      (GALWHISPER_CACHE defaults to /tmp/bench-cache; the corpus and model conversion are cached.)
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

THREADS = 2
WARMUP_S = 20.0


# ---------------------------------------------------------------------------------------------
# The long recording


def build_recording(target_s: float) -> tuple[Path, str, float]:
    import numpy as np
    import soundfile as sf

    from galwhisper.audio import SAMPLE_RATE, load_audio

    cache = _common.setup_env()
    folder = _common.corpus(200)
    wav, ref_file = cache / f"long-{int(target_s)}s.wav", cache / f"long-{int(target_s)}s.txt"
    if wav.is_file() and ref_file.is_file():
        return wav, ref_file.read_text(encoding="utf-8"), sf.info(str(wav)).duration
    rng = np.random.default_rng(0)
    pieces, sentences, total = [], [], 0.0
    for path, sentence in _common.cv_rows(folder):
        audio = load_audio(path)
        pause = np.zeros(int(rng.uniform(0.5, 1.0) * SAMPLE_RATE), dtype=np.float32)
        pieces += [audio, pause]
        sentences.append(sentence)
        total += (len(audio) + len(pause)) / SAMPLE_RATE
        if total >= target_s:
            break
    if total < target_s:
        raise SystemExit(f"corpus too small for {target_s} s of audio")
    audio = np.concatenate(pieces)
    sf.write(str(wav), audio, SAMPLE_RATE, subtype="FLOAT")
    reference = " ".join(sentences)
    ref_file.write_text(reference, encoding="utf-8")
    return wav, reference, len(audio) / SAMPLE_RATE


# ---------------------------------------------------------------------------------------------
# Children: one engine config each


def child(args) -> None:
    _common.setup_env()
    import soundfile as sf

    audio, rate = sf.read(args.wav, dtype="float32")
    assert rate == 16000
    warm = audio[: int(WARMUP_S * rate)]
    if args.engine == "gw":
        from galwhisper.transcribe import Transcriber, TranscribeOptions

        t = time.perf_counter()
        transcriber = Transcriber("base", compute_type=args.compute_type, cpu_threads=THREADS)
        load_s = time.perf_counter() - t
        options = TranscribeOptions(language="gl", beam_size=1, batch_size=args.batch_size)
        transcriber.transcribe(warm, options)
        t = time.perf_counter()
        text = transcriber.transcribe(audio, options).text
        wall = time.perf_counter() - t
    else:
        import torch

        torch.set_num_threads(THREADS)
        from transformers import pipeline
        from transformers.utils import logging as hf_logging

        from galwhisper import models

        hf_logging.set_verbosity_error()
        t = time.perf_counter()
        pipe = pipeline("automatic-speech-recognition", model=str(models.hf_dir("base")), chunk_length_s=30,
                        batch_size=args.batch_size, device="cpu")
        load_s = time.perf_counter() - t
        kwargs = dict(generate_kwargs=dict(language="gl", task="transcribe", num_beams=1))
        pipe({"raw": warm, "sampling_rate": rate}, **kwargs)
        t = time.perf_counter()
        text = pipe({"raw": audio, "sampling_rate": rate}, **kwargs)["text"]
        wall = time.perf_counter() - t
    _common.emit({"wall_s": wall, "load_s": load_s, "text": text, "peak_rss_mb": _common.peak_rss_mb()})


# ---------------------------------------------------------------------------------------------
# Parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="~100 s of audio and fewer tunings (< 2 min)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--engine", choices=("gw", "hf"), help=argparse.SUPPRESS)
    parser.add_argument("--wav", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--compute-type", default="int8", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    _common.setup_env()
    target = 100.0 if args.quick else 330.0
    wav, reference, duration = build_recording(target)
    print(f"audio: {duration:.1f} s ({duration / 60:.1f} min) of synthetic Galician speech, "
          f"{len(reference.split())} reference words; machine: {_common.machine()}", flush=True)

    # galwhisper's current defaults (read from the code, so the benchmark follows them).
    import inspect

    from galwhisper.transcribe import Transcriber, TranscribeOptions

    default_batch = TranscribeOptions().batch_size
    default_compute = inspect.signature(Transcriber.__init__).parameters["compute_type"].default

    def gw(compute: str, batch: int) -> tuple:
        tag = " (default)" if (compute, batch) == (default_compute, default_batch) else ""
        tag = tag or (" (sequential)" if batch == 1 else "")
        return (f"galwhisper {compute} batch {batch}{tag}", "gw", batch, compute)

    # (label, engine, batch size, compute type); the first two are the headline comparison.
    configs = [gw(default_compute, default_batch), ("transformers pipeline fp32 batch 8", "hf", 8, "")]
    if args.quick:
        wanted = [("int8", 8), ("int8_float32", default_batch)]
    else:
        wanted = [("int8", 4), ("int8", 8), ("int8", 16), ("int8_float32", 4), ("int8_float32", 8),
                  ("int8_float32", 16), ("int8", 1)]
    configs += [gw(c, b) for c, b in dict.fromkeys(wanted) if (c, b) != (default_compute, default_batch)]

    from galwhisper.metrics import error_rates

    results = {}
    for label, engine, batch, compute in configs:
        child_args = ["--engine", engine, "--wav", str(wav), "--batch-size", str(batch)]
        if compute:
            child_args += ["--compute-type", compute]
        r = _common.run_child("transcribe_speed.py", child_args, label)
        rates = error_rates([reference], [r["text"]])
        r.update(wer=rates.wer, cer=rates.cer, words=len(r["text"].split()))
        results[label] = r
        print(f"  done: {label}: {r['wall_s']:.1f} s", flush=True)

    hf = results["transformers pipeline fp32 batch 8"]
    rows = []
    for label, r in results.items():
        rows.append([label, f"{r['load_s']:.1f}", f"{r['wall_s']:.1f}", f"{r['wall_s'] / duration:.3f}",
                     f"{duration / r['wall_s']:.1f}x", f"{100 * r['wer']:.1f}", f"{100 * r['cer']:.1f}",
                     r["words"], f"{r['peak_rss_mb']:.0f}", f"{hf['wall_s'] / r['wall_s']:.2f}x"])
    print()
    print(f"Transcription of {duration:.1f} s of audio, {datetime.date.today()}, machine: {_common.machine()}, "
          f"{THREADS} threads; reference {len(reference.split())} words")
    print(_common.table(["config", "load s", "wall s", "RTF", "speed", "WER %", "CER %", "words", "peak MB",
                         "vs transformers"], rows))
    default = results[configs[0][0]]
    best = min((l for l in results if l.startswith("galwhisper")), key=lambda l: results[l]["wall_s"])
    print()
    print(f"ratio galwhisper default ({default_compute}, batch {default_batch}) / transformers pipeline: "
          f"{hf['wall_s'] / default['wall_s']:.2f}x faster "
          f"(target >= 4x: {'met' if hf['wall_s'] / default['wall_s'] >= 4 else 'NOT met'})")
    brief = "galwhisper int8 batch 8" + (" (default)" if (default_compute, default_batch) == ("int8", 8) else "")
    if brief in results and brief != configs[0][0]:
        print(f"ratio galwhisper int8 batch 8 / transformers pipeline: {hf['wall_s'] / results[brief]['wall_s']:.2f}x")
    print(f"fastest galwhisper config: {best} ({results[best]['wall_s']:.1f} s, "
          f"{default['wall_s'] / results[best]['wall_s']:.2f}x the default's speed)")
    print(_common.quiet_summary())
    out = Path(_common.setup_env()) / f"transcribe_speed{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps({"duration_s": duration, "reference": reference, "results": results}, ensure_ascii=False, indent=1))
    print(f"(texts and figures in {out})")


if __name__ == "__main__":
    main()
