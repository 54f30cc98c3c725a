"""Segment timestamps of a fine-tuned model on long-form speech whose sentence times are known.

The long-form file is built from the synthetic corpus' test clips (sentences never trained on)
joined with 0.5-1.5 s pauses (`galwhisper.synthetic.long_form`; the corpus records where each
clip's speech is, so every sentence's true start is known to the sample). The model transcribes it
with timestamps and without, batched (the default: Silero-VAD windows, batch 16) and sequential
(Whisper's own long-form algorithm); printed: the error of each sentence's start (the start of the
hypothesis segment that best matches its text; median and 90th percentile), the share within
0.8 s, the number of segments, and the WER of the whole text with and without timestamps.

Targets for the demo's model (issue: timestamps that survive fine-tuning): median start error
<= 0.3 s, 90% within 0.8 s, WER with timestamps within 2 points of WER without.

Run:  .venv/bin/python benchmarks/timestamps.py [--model runs/demo/run/best-ct2] [--seconds 240]
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def measure(model: str, corpus: Path, seconds: float) -> list[list]:
    from galwhisper import metrics
    from galwhisper.synthetic import long_form
    from galwhisper.transcribe import TranscribeOptions, Transcriber

    audio, truth = long_form(corpus, "test", seconds=seconds, seed=1)
    reference = " ".join(text for _, _, text in truth)
    transcriber = Transcriber(model)
    rows = []
    for label, options in (
        ("batched, timestamps", TranscribeOptions(timestamps=True)),
        ("batched, no timestamps", TranscribeOptions(timestamps=False)),
        ("sequential, timestamps", TranscribeOptions(batch_size=1, timestamps=True)),
    ):
        started = time.perf_counter()
        result = transcriber.transcribe(audio, options, name="long-form")
        elapsed = time.perf_counter() - started
        wer = metrics.error_rates([reference], [result.text]).wer
        if options.timestamps:
            errors = np.array(metrics.segment_start_errors(truth, [(s.start, s.end, s.text) for s in result.segments]))
            timing = [f"{np.median(errors):.2f}", f"{np.percentile(errors, 90):.2f}", f"{100 * np.mean(errors <= 0.8):.0f}%"]
        else:
            timing = ["-", "-", "-"]
        rows.append([label, len(result.segments), *timing, f"{100 * wer:.1f}", f"{elapsed:.1f}"])
    return rows, len(truth), len(audio) / 16000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="runs/demo/run/best-ct2", help="a model spec (default: the demo's fine-tuned model)")
    parser.add_argument("--corpus", default="runs/demo/corpus", help="a synthetic corpus folder (default: the demo's)")
    parser.add_argument("--seconds", type=float, default=240.0, help="length of the long-form file")
    args = parser.parse_args()
    _common.setup_env()
    from galwhisper import models

    _common.wait_quiet("timestamps")
    rows, sentences, seconds = measure(args.model, Path(args.corpus), args.seconds)
    trained = models.trained_info(args.model)
    print(f"Segment timestamps on {seconds:.0f} s of long-form synthetic Galician ({sentences} sentences), "
          f"{datetime.date.today()}, model {args.model} (trained with timestamps: {bool(trained.get('timestamps'))}), "
          f"machine: {_common.machine()}")
    print(_common.table(["decoding", "segments", "start error median s", "p90 s", "within 0.8 s", "WER %", "seconds"], rows))
    with_ts, without = float(rows[0][5]), float(rows[1][5])
    print(f"WER with timestamps - without (batched): {with_ts - without:+.1f} points (target: within 2)")
    print(_common.quiet_summary())


if __name__ == "__main__":
    main()
