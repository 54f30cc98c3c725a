"""Repetition loops: galwhisper's batched decoding with and without the repetition guard.

What is compared, on long-form synthetic Galician speech with the bundled Whisper base (int8, 2
CPU threads, `TranscribeOptions(language="gl")`, batch 16 over Silero-VAD windows):

  before         the guard off (`compression_ratio_threshold="off", max_repeats="off"`): the
                 batched pipeline as it was, with no check on its output
  guard          galwhisper's default: a window whose text compresses better than 2.4 or
                 repeats a phrase more than 4 times in a row is decoded again on its own
                 (greedy, repetition_penalty 1.2); what still loops is cut to one occurrence
  guard+logprob  the default plus `log_prob_threshold=-1.0` (faster-whisper's value): windows
                 with a low average log-probability are decoded again too
  sequential     batch 1 (Whisper's long-form algorithm), guard on

Two recordings: "sentences", the first 40 packaged sentences read by espeak-ng's Portuguese voice
at 150 words a minute with 0.3 s pauses (~2.4 min, the kind of file on which the batched base
looped), and "corpus", benchmarks/transcribe_speed.py's 5.5 min of corpus clips (several
voices, 0.5-1.0 s pauses). Targets (issue 13) for `guard`: no phrase repeated more than 4 times
in a row, a word count within 15% of the reference, and at most 1.3x the time of `before`.

With `--finetuned DIR` (e.g. runs/demo/best-ct2) the WER of that model on the synthetic test
clips is measured with the guard on and off (it should not change: the guard only acts on
windows that loop).

Run:  .venv/bin/python benchmarks/repetition.py [--quick] [--finetuned runs/demo/best-ct2]
      (--quick: the "sentences" recording only)
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from transcribe_speed import build_recording  # noqa: E402

THREADS = 2
SENTENCES = 40
GUARD_OFF = {"compression_ratio_threshold": "off", "max_repeats": "off"}
CONFIGS = {  # label -> TranscribeOptions overrides
    "before (no guard)": GUARD_OFF,
    "guard (default)": {},
    "guard + log_prob_threshold -1.0": {"log_prob_threshold": -1.0},
    "sequential (batch 1), guard": {"batch_size": 1},
}


def sentences_recording() -> tuple[Path, str, float]:
    """The first SENTENCES packaged sentences, espeak-ng pt at 150 wpm, 0.3 s pauses; built once."""
    import numpy as np
    import soundfile as sf

    from galwhisper.audio import SAMPLE_RATE, load_audio
    from galwhisper.synthetic import load_sentences

    cache = _common.setup_env()
    wav, ref = cache / f"sentences-{SENTENCES}.wav", cache / f"sentences-{SENTENCES}.txt"
    if not (wav.is_file() and ref.is_file()):
        folder = cache / f"sentences-{SENTENCES}-clips"
        folder.mkdir(exist_ok=True)
        pieces, spoken = [], load_sentences()[:SENTENCES]
        for i, sentence in enumerate(spoken):
            clip = folder / f"{i:03d}.wav"
            subprocess.run(["espeak-ng", "-v", "pt", "-s", "150", "-w", str(clip), sentence], check=True, capture_output=True)
            pieces += [load_audio(clip), np.zeros(int(0.3 * SAMPLE_RATE), np.float32)]
        sf.write(str(wav), np.concatenate(pieces), SAMPLE_RATE, subtype="FLOAT")
        ref.write_text(" ".join(spoken), encoding="utf-8")
    return wav, ref.read_text(encoding="utf-8"), sf.info(str(wav)).duration


def child(args) -> None:
    _common.setup_env()
    import soundfile as sf

    from galwhisper.transcribe import TranscribeOptions, Transcriber

    overrides = json.loads(args.options)
    if args.clips:  # the fine-tuned model on short clips: guard on and off, one text per clip
        transcriber = Transcriber(args.model, compute_type="int8", cpu_threads=THREADS)
        rows = json.loads(Path(args.clips).read_text(encoding="utf-8"))
        texts = [transcriber.transcribe(path, TranscribeOptions(language="gl", **overrides)).text for path, _ in rows]
        return _common.emit({"texts": texts})
    audio, rate = sf.read(args.wav, dtype="float32")
    transcriber = Transcriber("base", compute_type="int8", cpu_threads=THREADS)
    options = TranscribeOptions(language="gl", **overrides)
    transcriber.transcribe(audio[: 20 * rate], options)  # warm-up, untimed
    started = time.perf_counter()
    result = transcriber.transcribe(audio, options)
    _common.emit({"wall_s": time.perf_counter() - started, "text": result.text, "notes": result.notes})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the 'sentences' recording only")
    parser.add_argument("--finetuned", help="also compare a fine-tuned model's WER with the guard on and off")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--wav", help=argparse.SUPPRESS)
    parser.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--clips", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    from galwhisper.metrics import error_rates, normalize
    from galwhisper.transcribe import longest_repetition

    cache = _common.setup_env()
    recordings = {"sentences": sentences_recording()}
    if not args.quick:
        recordings["corpus"] = build_recording(330.0)
    print(f"machine: {_common.machine()}; bundled base int8, {THREADS} threads", flush=True)
    results, rows, verdicts = {}, [], []
    for name, (wav, reference, duration) in recordings.items():
        ref_words = len(normalize(reference).split())
        print(f"{name}: {duration:.1f} s, {ref_words} reference words", flush=True)
        for label, overrides in CONFIGS.items():
            r = _common.run_child("repetition.py", ["--wav", str(wav), "--options", json.dumps(overrides)], f"{name}: {label}")
            words = len(normalize(r["text"]).split())
            longest = longest_repetition(r["text"])
            r.update(words=words, longest=longest.count if longest else 1, phrase=longest.phrase if longest else "",
                     wer=error_rates([reference], [r["text"]]).wer, retried=sum("decoded again" in n for n in r["notes"]),
                     cut=sum("cut to one" in n for n in r["notes"]))  # fmt: skip
            results[f"{name}: {label}"] = r
            before = results[f"{name}: before (no guard)"]
            rows.append([name, label, f"{r['wall_s']:.1f}", f"{r['wall_s'] / before['wall_s']:.2f}x", r["words"],
                         f"{100 * (r['words'] / ref_words - 1):+.0f}%", f"{r['longest']} ({r['phrase'][:20]})" if r["phrase"] else "none",
                         r["retried"], r["cut"], f"{100 * r['wer']:.1f}"])  # fmt: skip
        guard, before = results[f"{name}: guard (default)"], results[f"{name}: before (no guard)"]
        ok = guard["longest"] <= 4 and abs(guard["words"] / ref_words - 1) <= 0.15 and guard["wall_s"] <= 1.3 * before["wall_s"]
        verdicts.append(f"{name}: guard: longest run {guard['longest']} (<= 4), words {guard['words']}/{ref_words} "
                        f"({100 * (guard['words'] / ref_words - 1):+.0f}%, within 15%), time {guard['wall_s'] / before['wall_s']:.2f}x "
                        f"(<= 1.3x): {'met' if ok else 'NOT met'}")  # fmt: skip

    print()
    print(f"Repetition guard, {datetime.date.today()}, machine: {_common.machine()}, {THREADS} threads")
    print(_common.table(["recording", "config", "wall s", "vs before", "words", "vs ref", "longest run", "decoded again",
                         "cut", "WER %"], rows))  # fmt: skip
    print()
    print("\n".join(verdicts))
    if args.finetuned:
        print(finetuned_wer(args.finetuned, error_rates))
    else:
        print("fine-tuned model: not measured (pass --finetuned runs/demo/best-ct2 once `galwhisper demo` has made one)")
    print(_common.quiet_summary())
    out = Path(cache) / f"repetition{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps(results, ensure_ascii=False, indent=1))
    print(f"(texts, notes and figures in {out})")


def finetuned_wer(model: str, error_rates) -> str:
    """The fine-tuned model's WER on the synthetic corpus's test clips, guard on and off."""
    from galwhisper.synthetic import SyntheticConfig, build_corpus

    folder = build_corpus(SyntheticConfig(out_dir=_common.setup_env() / "corpus-test", n_train=0, n_validation=0), progress=False)
    rows = [(str(path), sentence) for path, sentence in _common.cv_rows(folder, "test.tsv")]
    clips = Path(_common.setup_env()) / "finetuned-clips.json"
    clips.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    wers = {}
    for label, overrides in (("guard on", {}), ("guard off", GUARD_OFF)):
        r = _common.run_child("repetition.py", ["--clips", str(clips), "--model", model, "--options", json.dumps(overrides)],
                              f"fine-tuned: {label}")  # fmt: skip
        wers[label] = error_rates([s for _, s in rows], r["texts"]).wer
    return (f"fine-tuned {model} on {len(rows)} synthetic test clips: WER {100 * wers['guard on']:.2f}% with the guard, "
            f"{100 * wers['guard off']:.2f}% without")


if __name__ == "__main__":
    main()
