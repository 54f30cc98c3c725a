"""Harvest speed and the model check: hours of audio harvested per hour of wall time, with and
without the check, and how well the check keeps good segments and drops out-of-sync ones.

Data: "videos" built from the synthetic corpus (galwhisper.synthetic's clips, espeak-ng voices
with speed, pitch and noise varied): VIDEOS videos of CLIPS clips each, joined with pauses of
0.2-0.6 s or 1.2-2.0 s (so segments of one to a few sentences), muxed by ffmpeg into .mp4 (H.264
+ AAC) with an .srt whose cue times are the clips' exact places. The same videos also get tracks
shifted by 3 s and by 6 s (out of sync by about one and two sentences).

Runs, each in its own fresh process, back to back (galwhisper.harvest.harvest, 2 cores):
  (a) --no-check on the good tracks;
  (b) the default check (bundled base, --max-cer default) on the good tracks;
  (c) the default check on both shifted sets.
Wall time includes loading the model, decoding the media, cutting and writing the clips.
From the CER of every checked segment (harvest records it for kept and dropped ones) the script
also prints, for several --max-cer values, the share of good segments kept and of shifted ones
dropped by the per-segment threshold alone (the whole-video rule, --max-bad-share, comes on top).

Run:  .venv/bin/python benchmarks/harvest_speed.py [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

SHIFTS = (3.0, 6.0)
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


# ---------------------------------------------------------------------------------------------
# The videos


def _clock(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def _srt(cues: list[tuple[float, float, str]], shift: float = 0.0) -> str:
    return "\n".join(f"{i}\n{_clock(s + shift)} --> {_clock(e + shift)}\n{t}\n" for i, (s, e, t) in enumerate(cues, 1))


def build_videos(videos: int, clips: int) -> Path:
    """root/good, root/shift3, root/shift6: the same .mp4 files with their .srt tracks."""
    import numpy as np
    import soundfile as sf

    from galwhisper.audio import SAMPLE_RATE, load_audio

    cache = _common.setup_env()
    root = cache / f"harvest-videos-{videos}x{clips}"
    if (root / "done").is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    folders = {"good": 0.0, **{f"shift{s:g}": s for s in SHIFTS}}
    for name in folders:
        (root / name).mkdir(parents=True)
    rows = _common.cv_rows(_common.corpus(200))
    rng = np.random.default_rng(0)
    for v in range(videos):
        pieces, cues, at = [np.zeros(SAMPLE_RATE // 2, np.float32)], [], 0.5
        for path, sentence in rows[v * clips : (v + 1) * clips]:
            audio = load_audio(path)
            cues.append((round(at, 3), round(at + len(audio) / SAMPLE_RATE, 3), sentence))
            pause = rng.uniform(0.2, 0.6) if rng.random() < 0.6 else rng.uniform(1.2, 2.0)
            pieces += [audio, np.zeros(int(pause * SAMPLE_RATE), np.float32)]
            at += (len(audio) + int(pause * SAMPLE_RATE)) / SAMPLE_RATE
        wav = root / f"video{v:02d}.wav"
        sf.write(str(wav), np.concatenate(pieces), SAMPLE_RATE, subtype="PCM_16")
        mp4 = root / "good" / f"video{v:02d}.mp4"
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=black:s=32x32:r=4",
                        "-i", str(wav), "-shortest", "-c:v", "libx264", "-c:a", "aac", str(mp4)], check=True)
        wav.unlink()
        for name, shift in folders.items():
            if name != "good":
                (root / name / mp4.name).hardlink_to(mp4)
            (root / name / f"{mp4.stem}.srt").write_text(_srt(cues, shift), encoding="utf-8")
    (root / "done").write_text("")
    return root


# ---------------------------------------------------------------------------------------------
# Child: one harvest


def child(sources: list[str], out: Path, no_check: bool) -> dict:
    from galwhisper.harvest import HarvestConfig, harvest

    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    summary = harvest(HarvestConfig(sources=tuple(sources), out_dir=out, no_check=no_check), progress=False)
    wall = time.perf_counter() - started

    def table(name: str) -> list[dict]:
        lines = (out / name).read_text(encoding="utf-8").splitlines()
        return [dict(zip(lines[0].split("\t"), line.split("\t"))) for line in lines[1:]]

    checked = {}  # source -> CERs of every checked segment
    for row in table("manifest.tsv") + table("dropped.tsv"):
        if row.get("cer"):
            checked.setdefault(row["source"], []).append(float(row["cer"]))
    return {"wall_s": wall, "summary": {k: summary[k] for k in ("sources", "totals", "settings")}, "cers": checked}


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 videos instead of 8 (~2 min)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sources", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--no-check", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cache = _common.setup_env()
    if args.child:
        return _common.emit(child(args.sources, Path(args.out), args.no_check))

    videos, clips = (3, 15) if args.quick else (8, 15)
    root = build_videos(videos, clips)
    from galwhisper import models
    from galwhisper.harvest import HarvestConfig

    models.resolve("base")  # the bundled model is joined before anything is timed
    default_cer = HarvestConfig(sources=("x",), out_dir=cache).max_cer
    shifted = [str(root / f"shift{s:g}") for s in SHIFTS]
    runs = [("no check, good tracks", [str(root / "good")], True),
            ("check, good tracks", [str(root / "good")], False),
            ("check, shifted tracks", shifted, False)]
    results = {}
    for label, sources, no_check in runs:
        out = cache / f"harvest-bench-{len(results)}"
        results[label] = _common.run_child("harvest_speed.py", ["--sources", *sources, "--out", str(out),
                                                                *(["--no-check"] if no_check else [])], label)
        print(f"  done: {label}: {results[label]['wall_s']:.1f} s", flush=True)

    rows = []
    for label, r in results.items():
        totals = r["summary"]["totals"]
        dropped = totals["segments_dropped"]
        hours_in, hours_kept, wall_h = totals["hours_audio"], totals["hours_kept"], r["wall_s"] / 3600
        checked = sum(len(c) for c in r["cers"].values())
        rows.append([label, totals["videos"], f"{hours_in * 60:.1f}", f"{r['wall_s']:.1f}", f"{hours_in / wall_h:.1f}",
                     f"{hours_kept / wall_h:.1f}", totals["segments_kept"], dropped["over_max_cer"],
                     dropped["track_out_of_sync"], dropped["too_short"] + dropped["too_long"] + dropped["past_audio_end"],
                     f"{r['wall_s'] / checked:.2f}" if checked else "-"])
    print()
    print(f"galwhisper harvest, {videos} videos x {clips} synthetic clips, {datetime.date.today()}, machine: {_common.machine()}")
    print(_common.table(["run", "videos", "audio min", "wall s", "audio h / h", "kept h / h", "kept", "over cer",
                         "out of sync", "other drops", "s / checked seg"], rows))

    good = results["check, good tracks"]
    bad = results["check, shifted tracks"]
    good_cers = [c for cers in good["cers"].values() for c in cers]
    print()
    print(f"The check at the default --max-cer {default_cer:g} (with the whole-video rule):")
    checked_good = good["summary"]["totals"]["segments_kept"] + good["summary"]["totals"]["segments_dropped"]["over_max_cer"] \
        + good["summary"]["totals"]["segments_dropped"]["track_out_of_sync"]
    share_rows = [["good tracks", checked_good, f"{100 * good['summary']['totals']['segments_kept'] / max(checked_good, 1):.1f}% kept"]]
    for source in shifted:
        s = bad["summary"]["sources"][source]
        n = s["segments_kept"] + s["segments_dropped"]["over_max_cer"] + s["segments_dropped"]["track_out_of_sync"]
        share_rows.append([f"tracks shifted {Path(source).name[5:]} s", n,
                           f"{100 * (n - s['segments_kept']) / max(n, 1):.1f}% dropped ({s['segments_kept']} kept)"])
    print(_common.table(["segments", "checked", "outcome"], share_rows))
    print()
    print("Per-segment threshold alone (CER of each checked segment; median good "
          f"{sorted(good_cers)[len(good_cers) // 2]:.2f}):")
    sweep = []
    for t in THRESHOLDS:
        row = [f"{t:g}", f"{100 * sum(c <= t for c in good_cers) / len(good_cers):.1f}%"]
        for source in shifted:
            cers = bad["cers"].get(source, [])
            row.append(f"{100 * sum(c > t for c in cers) / max(len(cers), 1):.1f}%")
        sweep.append(row)
    print(_common.table(["--max-cer", "good kept", *[f"shift {Path(s).name[5:]} s dropped" for s in shifted]], sweep))
    print()
    print(_common.quiet_summary())
    print(json.dumps({label: {"wall_s": round(r["wall_s"], 1), "totals": r["summary"]["totals"]} for label, r in results.items()}))


if __name__ == "__main__":
    main()
