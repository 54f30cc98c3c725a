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
    p.add_argument("--batch-size", type=int, default=8, help="windows decoded together (1: sequential)")
    p.add_argument("--compute-type", default="int8", help="int8 | float32 | int8_float32 | float16 (GPU) ...")
    p.add_argument("--vad", action="store_true", help="skip non-speech with Silero VAD (always on when --batch-size > 1)")
    p.add_argument("--word-timestamps", action="store_true")
    p.add_argument("--backend", default="ct2", choices=["ct2", "transformers"])
    p.add_argument("--max-download-mb", type=float, default=500, help="URL size cap")
    p.add_argument("--max-duration", type=float, default=3600, help="URL duration cap in seconds")
    p.add_argument("--download-timeout", type=float, default=600, help="URL download time cap in seconds")
    p.set_defaults(run=run_transcribe)


def run_transcribe(args) -> int:
    from galwhisper.media import DownloadLimits
    from galwhisper.transcribe import TranscribeOptions, Transcriber, transcribe_inputs, write_transcript

    options = TranscribeOptions(
        language=None if args.language == "auto" else args.language,
        task=args.task,
        beam_size=args.beam_size,
        batch_size=args.batch_size,
        vad=args.vad,
        word_timestamps=args.word_timestamps,
    )
    limits = DownloadLimits(
        max_bytes=int(args.max_download_mb * 1024 * 1024), max_seconds=args.max_duration, timeout_seconds=args.download_timeout
    )
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
    p.add_argument("--max-download-mb", type=float, default=500, help="URL size cap")
    p.add_argument("--max-duration", type=float, default=3600, help="URL duration cap in seconds")
    p.add_argument("--download-timeout", type=float, default=600, help="URL download time cap in seconds")
    p.set_defaults(run=run_app)


def run_app(args) -> int:
    from galwhisper.app import launch
    from galwhisper.media import DownloadLimits

    limits = DownloadLimits(
        max_bytes=int(args.max_download_mb * 1024 * 1024), max_seconds=args.max_duration, timeout_seconds=args.download_timeout
    )
    launch(
        args.models, args.runs_dir, limits,
        server_name=args.host, server_port=args.port, share=args.share, concurrency=args.concurrency,
    )  # fmt: skip
    return 0


# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="galwhisper", description="Fine-tune and serve Whisper for Galician.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_transcribe(sub)
    add_app(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    _quiet_libraries()
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except GalwhisperError as exc:
        print(f"galwhisper: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("galwhisper: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
