"""Common Voice as downloaded: `prepare --source cv:ARCHIVE` vs `cv:FOLDER` (already extracted).

Same clips, same machine, back-to-back fresh processes. The synthetic corpus (200 train clips,
Common Voice layout) is packed as a release archive `cv-corpus-bench/gl/{*.tsv,clips/*.mp3}`
(.tar.gz), and prepared (train split, num_proc 2) from

  (a) the extracted folder: `cv:FOLDER`;
  (b) the archive: `cv:ARCHIVE.tar.gz`, the extraction cache emptied first, so the time includes
      both streaming passes over the archive (TSVs, then the clips the splits name);
  (c) a 10x bigger archive: the same TSVs and clips after 9x their bytes of clips no TSV names
      (what a real release holds beyond the chosen splits), to show that time grows with the
      bytes streamed and memory does not.

Printed: wall time, archive / folder speed (target >= 0.8x) and peak memory of each process.

Run:  .venv/bin/python benchmarks/cv_archive.py [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def child(source: str, out: Path, cache: Path) -> dict:
    import transformers  # noqa: F401  (imported before the clock starts)

    from galwhisper.prepare import PrepareConfig, prepare

    shutil.rmtree(cache / "cv", ignore_errors=True)  # the archive is read again every run
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    summary = prepare(PrepareConfig(source=source, out_dir=out, splits=["train"], num_proc=2), progress=False)
    return {"wall_s": time.perf_counter() - t, "clips": summary["splits"]["train"]["clips"]}


def make_archive(corpus: Path, path: Path, padding: int) -> Path:
    """The corpus as a Common Voice release archive; `padding` extra copies of every clip under
    names no TSV lists."""
    if path.is_file():
        return path
    tmp = path.with_name(path.name + ".part")
    with tarfile.open(tmp, "w:gz") as tar:
        for tsv in sorted(corpus.glob("*.tsv")):
            tar.add(tsv, f"cv-corpus-bench/gl/{tsv.name}")
        clips = sorted((corpus / "clips").iterdir())
        # The unlisted copies come first, so the clips' pass streams through all of them.
        for copy in [*range(1, padding + 1), 0]:
            for clip in clips:
                name = clip.name if copy == 0 else f"unlisted_{copy}_{clip.name}"
                tar.add(clip, f"cv-corpus-bench/gl/clips/{name}")
    tmp.replace(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 clips, no 10x archive")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cache = _common.setup_env()
    if args.child:
        result = child(args.source, Path(args.out), cache)
        result["peak_rss_mb"] = _common.peak_rss_mb()
        return _common.emit(result)

    n = 40 if args.quick else 200
    corpus = _common.corpus(n)
    from galwhisper import models

    models.hf_dir("base")  # converted before anything is timed
    small = make_archive(corpus, cache / f"cv-bench-{n}.tar.gz", padding=0)
    sides = [("cv:FOLDER (extracted)", f"cv:{corpus}"), ("cv:ARCHIVE (.tar.gz)", f"cv:{small}:gl")]
    if not args.quick:
        big = make_archive(corpus, cache / f"cv-bench-{n}-x10.tar.gz", padding=9)
        sides.append(("cv:ARCHIVE 10x bigger", f"cv:{big}:gl"))
    sizes = {label: (Path(source.split(":")[1]).stat().st_size / 1e6 if source.endswith(":gl") else None)
             for label, source in sides}
    print(f"{n} clips from {corpus}; machine: {_common.machine()}", flush=True)

    results = {}
    for label, source in sides:
        results[label] = _common.run_child("cv_archive.py", ["--source", source, "--out", str(cache / "cv-bench-out")], label)
        print(f"  done: {label}: {results[label]['wall_s']:.1f} s", flush=True)

    folder = results["cv:FOLDER (extracted)"]
    rows = [[label, r["clips"], f"{sizes[label]:.1f}" if sizes[label] else "-", f"{r['wall_s']:.1f}",
             f"{folder['wall_s'] / r['wall_s']:.2f}x", f"{r['peak_rss_mb']:.0f}"] for label, r in results.items()]
    print()
    print(f"Preparing {n} Common Voice clips, {datetime.date.today()}, machine: {_common.machine()}")
    print(_common.table(["source", "clips", "archive MB", "wall s", "speed vs folder", "peak MB"], rows))
    speed = folder["wall_s"] / results["cv:ARCHIVE (.tar.gz)"]["wall_s"]
    print()
    print(f"ratio archive / extracted folder: {speed:.2f}x (target >= 0.8x: {'met' if speed >= 0.8 else 'NOT met'})")
    if "cv:ARCHIVE 10x bigger" in results:
        big_r, small_r = results["cv:ARCHIVE 10x bigger"], results["cv:ARCHIVE (.tar.gz)"]
        print(f"10x bigger archive: {big_r['wall_s'] / small_r['wall_s']:.2f}x the time, "
              f"{big_r['peak_rss_mb'] / small_r['peak_rss_mb']:.2f}x the peak memory")
    print(_common.quiet_summary())


if __name__ == "__main__":
    main()
