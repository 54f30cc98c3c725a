"""Command line: argument parsing only; every command is one call into the modules."""

from __future__ import annotations

import argparse
import os
import sys

from galwhisper.errors import GalwhisperError


def _quiet_libraries() -> None:
    # Offline by default: never wait on the hub for local models; users online can unset these.
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def add_download_limits(p) -> None:
    p.add_argument("--max-download-mb", type=float, default=500, help="URL size cap")
    p.add_argument("--max-duration", type=float, default=3600, help="URL duration cap in seconds")
    p.add_argument("--download-timeout", type=float, default=600, help="URL download time cap in seconds")


def download_limits(args):
    from galwhisper.media import DownloadLimits

    return DownloadLimits(int(args.max_download_mb * 1_000_000), args.max_duration, args.download_timeout)


# ---------------------------------------------------------------------------------------------
# transcribe


def add_transcribe(sub) -> None:
    p = sub.add_parser("transcribe", help="transcribe audio/video files and URLs")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="file path, http(s) URL or YouTube link")
    p.add_argument("--model", default="base", help="base, a model folder (HF or CT2), or a hub id")
    p.add_argument("--language", default="gl", help="language code, or 'auto' to detect (default gl)")
    p.add_argument("--task", default="transcribe", choices=["transcribe", "translate"])
    p.add_argument("--format", default=None, choices=["txt", "srt", "vtt", "json"], help="write files in this format")
    p.add_argument("--output-dir", default=".", help="where --format files go (default .)")
    p.add_argument("--beam-size", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16, help="windows decoded together (1: sequential)")
    p.add_argument("--compute-type", default="int8", help="int8 | float32 | int8_float32 | float16 (GPU) ...")
    p.add_argument("--vad", action="store_true", help="skip non-speech with Silero VAD (always on when --batch-size > 1)")
    p.add_argument("--word-timestamps", action="store_true")
    p.add_argument("--timestamps", action=argparse.BooleanOptionalAction, default=None,
                   help="model-predicted segment timestamps (default: only for sequential long-form)")
    p.add_argument("--backend", default="ct2", choices=["ct2", "transformers"])
    add_download_limits(p)
    p.set_defaults(run=run_transcribe)


def run_transcribe(args) -> int:
    from galwhisper.transcribe import TranscribeOptions, Transcriber, transcribe_inputs, write_transcript

    options = TranscribeOptions(
        language=None if args.language == "auto" else args.language,
        task=args.task,
        beam_size=args.beam_size,
        batch_size=args.batch_size,
        vad=args.vad,
        word_timestamps=args.word_timestamps,
        timestamps=args.timestamps,
    )
    limits = download_limits(args)
    transcriber = Transcriber(args.model, backend=args.backend, compute_type=args.compute_type)
    failures = 0
    for item, result in transcribe_inputs(args.inputs, transcriber, options, limits):
        if isinstance(result, GalwhisperError):
            failures += 1
            print(f"galwhisper: error: {result}", file=sys.stderr)
        elif args.format:
            path = write_transcript(result, args.format, args.output_dir)
            print(f"{item} -> {path} ({result.duration:.1f} s audio, RTF {result.real_time_factor:.3f})", file=sys.stderr)
        else:
            prefix = f"[{item}] " if len(args.inputs) > 1 else ""
            print(prefix + result.text)
    return 2 if failures else 0


# ---------------------------------------------------------------------------------------------
# app


def add_app(sub) -> None:
    p = sub.add_parser("app", help="serve the web app (microphone, YouTube/URL, audio file)")
    p.add_argument(
        "--model", dest="models", nargs="+", action="extend", metavar="M",
        help="models offered first (default: base); every RUNS_DIR/*/best-ct2 is offered too",
    )  # fmt: skip
    p.add_argument("--runs-dir", default="runs", help="folder of training runs to offer (default runs)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    p.add_argument("--concurrency", type=int, default=2, help="requests worked on at once (default 2)")
    add_download_limits(p)
    p.set_defaults(run=run_app)


def run_app(args) -> int:
    from galwhisper.app import launch

    limits = download_limits(args)
    launch(
        args.models, args.runs_dir, limits,
        server_name=args.host, server_port=args.port, share=args.share, concurrency=args.concurrency,
    )  # fmt: skip
    return 0


# ---------------------------------------------------------------------------------------------
# prepare / train / evaluate


def add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="corpus -> Whisper features on disk")
    p.add_argument("--source", required=True, help="cv:DIR | hf:DATASET[:CONFIG] | manifest:FILE | synthetic[:DIR]")
    p.add_argument("--out", required=True, help="folder for the prepared splits")
    p.add_argument("--model", default="base")
    p.add_argument("--language", default="gl")
    p.add_argument("--splits", nargs="*", default=None, help="only these splits (default: all)")
    p.add_argument("--max-per-split", type=int, default=None, help="take only the first N rows of each split")
    p.add_argument("--num-proc", type=int, default=2)
    p.add_argument("--min-seconds", type=float, default=0.2)
    p.add_argument("--max-seconds", type=float, default=30.0)
    p.add_argument("--max-label-tokens", type=int, default=448)
    p.add_argument("--cache-encoder", action="store_true", help="also store the frozen encoder's outputs (cached-encoder mode)")
    p.add_argument("--audio-column", default="audio", help="hf: sources")
    p.add_argument("--text-column", default=None, help="hf: sources (default: detected)")
    p.add_argument("--streaming", action="store_true", help="hf: stream instead of downloading")
    p.set_defaults(run=run_prepare)


def run_prepare(args) -> int:
    from pathlib import Path

    from galwhisper.prepare import PrepareConfig, prepare

    summary = prepare(PrepareConfig(
        source=args.source, out_dir=Path(args.out), model=args.model, language=args.language, splits=args.splits,
        max_per_split=args.max_per_split, num_proc=args.num_proc, min_seconds=args.min_seconds,
        max_seconds=args.max_seconds, max_label_tokens=args.max_label_tokens, cache_encoder=args.cache_encoder,
        audio_column=args.audio_column, text_column=args.text_column, streaming=args.streaming,
    ))  # fmt: skip
    for split, info in summary["splits"].items():
        print(f"{split}: {info['clips']} clips, {info['seconds'] / 60:.1f} min, {info['skipped']} skipped")
    print(f"prepared in {summary['elapsed_seconds']:.1f} s -> {args.out}")
    return 0


def add_train(sub) -> None:
    from galwhisper.train import MODES, PRECISIONS, PRESETS

    p = sub.add_parser("train", help="fine-tune on prepared features")
    p.add_argument("--features", required=True, help="a folder written by galwhisper prepare")
    p.add_argument("--out", required=True, help="run folder (best/, best-ct2/, history, curves)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--mode", choices=MODES, default=None)
    p.add_argument("--language", default=None)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--eval-steps", type=int)
    p.add_argument("--save-steps", type=int)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--lr-scheduler", default=None, help="linear | cosine | constant_with_warmup ...")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--eval-batch-size", type=int)
    p.add_argument("--grad-accum", type=int)
    p.add_argument("--gradient-checkpointing", action="store_true", default=None)
    p.add_argument("--precision", choices=PRECISIONS, default=None)
    p.add_argument("--early-stopping", type=int, default=None, metavar="N", help="stop after N evaluations without improvement")
    p.add_argument("--max-eval-samples", type=int)
    p.add_argument("--resume", action="store_true", default=None, help="continue from the last checkpoint")
    p.add_argument("--seed", type=int)
    p.set_defaults(run=run_train)


def run_train(args) -> int:
    from galwhisper.train import make_config, train

    options = {k: v for k, v in vars(args).items() if k not in ("command", "run", "preset")}
    config = make_config(args.preset, **options)
    summary = train(config)
    print(f"best validation WER {100 * (summary['best_wer'] or 0):.2f}% at step {summary['best_step']} "
          f"({summary['steps']} steps, {summary['train_seconds']:.0f} s) -> {args.out}/best, {args.out}/best-ct2")
    return 0


def add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="WER/CER of one or more models on a test split")
    p.add_argument("--model", action="append", required=True, dest="models", help="repeat for several models")
    p.add_argument("--data", required=True, help="a prepared folder or a source (cv:DIR, manifest:FILE, ...)")
    p.add_argument("--split", default="test")
    p.add_argument("--language", default="gl")
    p.add_argument("--out", default=None, help="folder for results.md/.json, wer.png, per-utterance TSVs")
    p.add_argument("--json", default=None, dest="json_path", help="write the JSON results here")
    p.add_argument("--beam-size", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--compute-type", default="int8")
    p.set_defaults(run=run_evaluate)


def run_evaluate(args) -> int:
    from galwhisper.evaluate import EvaluateConfig, evaluate, markdown_table

    results = evaluate(EvaluateConfig(
        models=args.models, data=args.data, split=args.split, language=args.language, out=args.out,
        json_path=args.json_path, beam_size=args.beam_size, batch_size=args.batch_size, compute_type=args.compute_type,
    ))  # fmt: skip
    print(markdown_table(results), end="")
    return 0


def add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the main job: synthetic Galician corpus, WER before/after fine-tuning, report")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--fresh", action="store_true", help="rebuild everything instead of reusing")
    p.add_argument("--n-train", type=int, default=None, help="training sentences (default: all)")
    p.add_argument("--max-steps", type=int, default=None)
    p.set_defaults(run=run_demo)


def run_demo(args) -> int:
    from pathlib import Path

    from galwhisper.demo import DemoConfig, run_demo as demo

    overrides = {"max_steps": args.max_steps} if args.max_steps else {}
    demo(DemoConfig(out=Path(args.out), fresh=args.fresh, n_train=args.n_train, train_overrides=overrides))
    return 0


# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="galwhisper", description="Fine-tune and serve Whisper for Galician.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_prepare(sub)
    add_train(sub)
    add_evaluate(sub)
    add_demo(sub)
    add_transcribe(sub)
    add_app(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    _quiet_libraries()
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except GalwhisperError as exc:
        # Long commands draw progress bars; start the message on a line of its own.
        start = "\n" if args.command in ("prepare", "train", "demo") else ""
        print(f"{start}galwhisper: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("galwhisper: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
