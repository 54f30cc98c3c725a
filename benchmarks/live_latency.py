"""Live transcription: latency to confirmation and cost per update, fed from a file at real-time pace.

What is measured, on the app's own path (`galwhisper.streaming.LiveSession`: a worker thread
that transcribes whenever at least 1 s of new audio came in, LocalAgreement-2, buffer trimmed at
pauses after confirmed words) with the bundled Whisper base, int8, 2 CPU threads:

  latency   for every word confirmed while the talk plays, the time from the end of the word
            in the audio (the model's word timestamp) to the end of the update that confirmed
            it, the audio being fed at real-time pace; median and 90th percentile. Words
            confirmed by agreement and words confirmed at the one-window limit (no agreement
            in 30 s of audio) are reported apart. whisper_streaming's paper reports 3.3 s on a GPU.
  cost      compute and audio per update, per minute of talk: flat when the trimming works (a
            loop that re-transcribes the whole talk grows linearly per update).
  quality   WER of the final live text and of the batch transcription of the same file
            (galwhisper's default, batched over VAD windows), against the spoken sentences.

The talk (`--talk gl`, the default) is synthetic Galician speech: clips of the built-in
synthetic corpus joined with 0.5-1.0 s pauses (benchmarks/transcribe_speed.py's recording). The
zero-shot base gets ~100% WER on it, and its hypotheses of the same audio change from update to
update, which is what LocalAgreement waits out; `--talk en` measures the same path on English
(IEEE "Harvard" sentences read by espeak-ng's en-us voice), which the base transcribes well, to
show what the policy reaches with a model that is sure of its words. The audio is resampled to
48 kHz int16 and fed in 0.1 s chunks, as Chromium's recorder sends it to the Live tab.

Run:  .venv/bin/python benchmarks/live_latency.py [--talk gl|en] [--quick] [--prompt-chars N]   (300 s; --quick: 120 s)
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from transcribe_speed import build_recording  # noqa: E402  (the long synthetic recording, built once)

THREADS = 2
CHUNK_S = 0.1  # what the browser sends
MIC_RATE = 48000
# IEEE recommended practice for speech quality measurements (1969), "Harvard sentences", lists 1-4.
HARVARD = """The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background.
It's easy to tell the depth of a well. These days a chicken leg is a rare dish. Rice is often
served in round bowls. The juice of lemons makes fine punch. The box was thrown beside the parked
truck. The hogs were fed chopped corn and garbage. Four hours of steady work faced us. A large
size in stockings is hard to sell. The boy was there when the sun rose. A rod is used to catch
pink salmon. The source of the huge river is the clear spring. Kick the ball straight and follow
through. Help the woman get back to her feet. A pot of tea helps to pass the evening. Smoky fires
lack flame and heat. The soft cushion broke the man's fall. The salt breeze came across from the
sea. The girl at the booth sold fifty bonds. The small pup gnawed a hole in the sock. The fish
twisted and turned on the bent hook. Press the pants and sew a button on the vest. The swan dive
was far short of perfect. The beauty of the view stunned the young boy. Two blue fish swam in the
tank. Her purse was full of useless trash. The colt reared and threw the tall rider. It snowed,
rained, and hailed the same morning. Read verse out loud for pleasure. Hoist the load to your
left shoulder. Take the winding path to reach the lake. Note closely the size of the gas tank.
Wipe the grease off his dirty face. Mend the coat before you go out. The wrist was badly strained
and hung limp. The stray cat gave birth to kittens. The young girl gave no clear response. The
meal was cooked before the bell rang. What joy there is in living.""".replace("\n", " ").split(". ")
TALKS = ("gl", "en")  # the talk's language: the --talk choices


def child(args) -> None:
    _common.setup_env()
    import soundfile as sf

    from galwhisper.streaming import LiveConfig, LiveSession, LiveTranscriber
    from galwhisper.transcribe import TranscribeOptions, Transcriber

    transcriber = Transcriber(args.model, compute_type="int8", cpu_threads=THREADS)
    options = TranscribeOptions(language=args.talk)
    audio16, _ = sf.read(args.wav, dtype="float32")
    transcriber.transcribe(audio16[: 20 * 16000], options)  # warm-up (VAD model, first CT2 calls), untimed
    started = time.perf_counter()
    file_text = transcriber.transcribe(audio16, options).text
    file_s = time.perf_counter() - started

    mic, rate = sf.read(args.mic, dtype="int16")
    config = LiveConfig() if args.prompt_chars is None else LiveConfig(prompt_chars=args.prompt_chars)
    session = LiveSession(LiveTranscriber(transcriber, options, config))
    step = int(CHUNK_S * rate)
    t0 = time.perf_counter()
    for i in range(0, len(mic), step):
        wait = t0 + (i + step) / rate - time.perf_counter()
        if wait > 0:
            time.sleep(wait)  # real-time pace: a chunk is sent once it has been "spoken"
        session.feed(mic[i : i + step], rate)
    fed = time.perf_counter()
    final = session.finish()
    stop_s = time.perf_counter() - fed
    updates = [
        {"heard": s.heard_seconds, "buffer": s.buffer_seconds, "compute": s.compute_seconds, "at": s.finished_at - t0,
         "forced": s.forced_words, "words": [[w.end, w.word] for w in s.confirmed_words]}
        for s in session.live.stats
    ]  # fmt: skip
    _common.emit({"file_text": file_text, "file_s": file_s, "live_text": final.text, "stop_s": stop_s,
                  "talk_s": len(mic) / rate, "updates": updates, "peak_rss_mb": _common.peak_rss_mb()})


def english_recording(target_s: float) -> tuple[Path, str, float]:
    """HARVARD sentences (cycled) read by espeak-ng en-us at 150 wpm, 0.5-1.0 s pauses; built once."""
    import numpy as np
    import soundfile as sf

    from galwhisper.audio import SAMPLE_RATE, load_audio

    cache = _common.setup_env()
    wav, ref = cache / f"english-{int(target_s)}s.wav", cache / f"english-{int(target_s)}s.txt"
    if wav.is_file() and ref.is_file():
        return wav, ref.read_text(encoding="utf-8"), sf.info(str(wav)).duration
    rng, pieces, spoken, total = np.random.default_rng(0), [], [], 0.0
    while total < target_s:
        sentence = HARVARD[len(spoken) % len(HARVARD)].rstrip(".") + "."
        clip_path = cache / "english-clip.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(clip_path), sentence], check=True, capture_output=True)
        clip = load_audio(clip_path)
        pieces += [clip, np.zeros(int(rng.uniform(0.5, 1.0) * SAMPLE_RATE), np.float32)]
        spoken.append(sentence)
        total += len(pieces[-2]) / SAMPLE_RATE + len(pieces[-1]) / SAMPLE_RATE
    audio = np.concatenate(pieces)
    sf.write(str(wav), audio, SAMPLE_RATE, subtype="FLOAT")
    ref.write_text(" ".join(spoken), encoding="utf-8")
    return wav, " ".join(spoken), len(audio) / SAMPLE_RATE


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="120 s of talk instead of 300 s")
    parser.add_argument("--talk", choices=TALKS, default="gl", help="Galician (default) or English speech")
    parser.add_argument("--model", default="base", help="the model (default: the bundled base; e.g. runs/demo/run/best-ct2)")
    parser.add_argument("--prompt-chars", type=int, help="LiveConfig.prompt_chars (default: its default; 0: no prompt)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--wav", help=argparse.SUPPRESS)
    parser.add_argument("--mic", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    cache = _common.setup_env()
    target = 120.0 if args.quick else 300.0
    wav, reference, duration = build_recording(target) if args.talk == "gl" else english_recording(target)
    mic = cache / f"{wav.stem}-mic{MIC_RATE // 1000}k.wav"
    if not mic.is_file():
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(wav), "-ar", str(MIC_RATE), "-ac", "1",
                        "-c:a", "pcm_s16le", str(mic)], check=True)  # fmt: skip
    print(f"talk: {duration:.1f} s of synthetic {'Galician' if args.talk == 'gl' else 'English'} speech, "
          f"{len(reference.split())} reference words, fed at "
          f"real-time pace in {CHUNK_S:g} s chunks at {MIC_RATE} Hz; machine: {_common.machine()}", flush=True)
    prompt = [] if args.prompt_chars is None else ["--prompt-chars", str(args.prompt_chars)]
    r = _common.run_child("live_latency.py", ["--wav", str(wav), "--mic", str(mic), "--talk", args.talk, "--model", args.model, *prompt],
                          f"live {args.talk}", timeout=4 * duration + 600)

    from galwhisper.metrics import error_rates

    agreed, forced = [], []  # seconds from a word's end in the audio to its confirmation
    for u in r["updates"]:
        split = len(u["words"]) - u["forced"]  # the forced words come last
        agreed += [u["at"] - end for end, _ in u["words"][:split]]
        forced += [u["at"] - end for end, _ in u["words"][split:]]
    lag = max((u["at"] - u["compute"]) - u["heard"] for u in r["updates"])  # how far behind the talk an update started
    print()
    print(f"Live transcription ({args.talk}), {datetime.date.today()}, machine: {_common.machine()}, model {args.model} int8, "
          f"{THREADS} threads, prompt_chars {'default' if args.prompt_chars is None else args.prompt_chars}")
    rows = [["confirmed by agreement", len(agreed), f"{statistics.median(agreed):.2f}", f"{percentile(agreed, 0.9):.2f}"]]
    if forced:
        rows.append(["confirmed at the window limit", len(forced), f"{statistics.median(forced):.2f}", f"{percentile(forced, 0.9):.2f}"])
    everything = agreed + forced
    rows.append(["all words confirmed while talking", len(everything), f"{statistics.median(everything):.2f}",
                 f"{percentile(everything, 0.9):.2f}"])  # fmt: skip
    print(_common.table(["latency: word end -> confirmed", "words", "median s", "p90 s"], rows))
    print()
    minutes = int(duration // 60) + 1
    rows = []
    for m in range(minutes):
        part = [u for u in r["updates"] if m * 60 <= u["heard"] < (m + 1) * 60]
        if part:
            computes, buffers = [u["compute"] for u in part], [u["buffer"] for u in part]
            rows.append([f"{m}-{m + 1} min", len(part), f"{statistics.median(buffers):.1f}", f"{max(buffers):.1f}",
                         f"{statistics.median(computes):.2f}", f"{percentile(computes, 0.9):.2f}"])  # fmt: skip
    print(_common.table(["talk", "updates", "median audio s", "max audio s", "median compute s", "p90 compute s"], rows))
    first, last = float(rows[0][4]), float(rows[-1][4])
    live_wer = error_rates([reference], [r["live_text"]]).wer
    file_wer = error_rates([reference], [r["file_text"]]).wer
    print()
    print(f"cost per update: first minute median {first:.2f} s, last minute {last:.2f} s "
          f"({last / first:.2f}x; flat means trimming keeps each update to at most one window)")
    print(f"updates started at most {lag:.1f} s behind the talk; final text {r['stop_s']:.1f} s after the last chunk")
    print(f"WER: live {100 * live_wer:.1f}% ({len(r['live_text'].split())} words), batch file transcription "
          f"{100 * file_wer:.1f}% ({len(r['file_text'].split())} words, {r['file_s']:.1f} s); reference "
          f"{len(reference.split())} words; peak memory {r['peak_rss_mb']:.0f} MB")
    print(_common.quiet_summary())
    out = Path(cache) / f"live_latency-{args.talk}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps({"duration_s": duration, "reference": reference, "result": r}, ensure_ascii=False, indent=1))
    print(f"(texts and per-update figures in {out})")


if __name__ == "__main__":
    main()
