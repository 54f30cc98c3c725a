"""Command line: argument parsing only; every command is one call into the modules.

Options default to "not given" (argparse.SUPPRESS): a command passes only what the user typed to
the configuration dataclass of its stage, which holds every default and checks every value.
Help texts read the defaults from those dataclasses, so each default is written once.
"""

from __future__ import annotations

import argparse
import os
import sys

from galwhisper.errors import GalwhisperError

SUPPRESS = argparse.SUPPRESS


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line with exit status 2, like every
    other user error (its default prints the usage block first)."""

    def error(self, message: str):
        self.exit(2, f"galwhisper: error: {self.prog.removeprefix('galwhisper ')}: {' '.join(message.split())}\n")


def _quiet_libraries() -> None:
    # Offline by default: never wait on the hub for local models; users online can unset these.
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not sys.stderr.isatty():  # model-loading and download bars: only on a terminal
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def _default(cls, name: str) -> str:
    from galwhisper.options import default

    return f"default {default(cls, name)}"


def _given(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if k not in ("command", "run")}




# ---------------------------------------------------------------------------------------------
# Download limits (transcribe, app)


def add_download_limits(p) -> None:
    from galwhisper.media import DownloadLimits as L

    p.add_argument("--max-download-mb", type=float, help=f"URL size cap ({_default(L, 'max_download_mb')})")
    p.add_argument("--max-duration", type=float, help=f"URL duration cap in seconds ({_default(L, 'max_duration')})")
    p.add_argument("--download-timeout", type=float, help=f"URL download time cap in seconds ({_default(L, 'download_timeout')})")
    p.add_argument("--allow-private-urls", action="store_true",
                   help="allow URLs on loopback, private or link-local addresses (default: refused)")


def download_limits(given: dict):
    from galwhisper.media import DownloadLimits
    from galwhisper.options import build

    return build(DownloadLimits, given)


# ---------------------------------------------------------------------------------------------
# transcribe


def add_transcribe(p) -> None:
    from galwhisper.transcribe import BACKENDS, FORMATS
    from galwhisper.transcribe import TranscribeOptions as T

    p.add_argument("inputs", nargs="+", metavar="INPUT", help="file path, http(s) URL or YouTube link")
    p.add_argument("--model", help="base, a model folder (HF or CT2), or a hub id (default base)")
    p.add_argument("--language", help=f"language code or name, or 'auto' to detect ({_default(T, 'language')})")
    p.add_argument("--task", choices=["transcribe", "translate"])
    p.add_argument("--format", choices=FORMATS, help="write one file per input in this format")
    p.add_argument("--output-dir", help="where --format files go (default .)")
    p.add_argument("--beam-size", type=int, help=_default(T, "beam_size"))
    p.add_argument("--batch-size", type=int, help=f"windows decoded together, 1: sequential ({_default(T, 'batch_size')})")
    p.add_argument("--compute-type", help="int8 | float32 | int8_float32 | float16 (GPU) ... (default int8)")
    p.add_argument("--vad", action="store_true", help="skip non-speech with Silero VAD (always on when --batch-size > 1)")
    p.add_argument("--word-timestamps", action="store_true")
    p.add_argument("--timestamps", action=argparse.BooleanOptionalAction,
                   help="model-predicted segment timestamps (default: only for sequential long-form)")
    p.add_argument("--backend", choices=BACKENDS, help="ct2 (default) or transformers (parity checks)")
    add_download_limits(p)


def run_transcribe(args) -> int:
    from galwhisper.files import check_output_dir
    from galwhisper.options import build
    from galwhisper.transcribe import TranscribeOptions, Transcriber, output_names, transcribe_inputs, write_transcript

    given = _given(args)
    options = build(TranscribeOptions, given)
    limits = download_limits(given)
    fmt = given.get("format")
    output_dir = check_output_dir(given.get("output_dir", "."), "--output-dir") if fmt else None
    stems = output_names(args.inputs)
    transcriber = Transcriber(**{k: given[k] for k in ("model", "backend", "compute_type") if k in given})
    failures = 0
    for item, result in transcribe_inputs(args.inputs, transcriber, options, limits):
        if isinstance(result, GalwhisperError):
            failures += 1
            print(f"galwhisper: error: {result}", file=sys.stderr)
        elif fmt:
            path = write_transcript(result, fmt, output_dir, stems[item])
            print(f"{item} -> {path} ({result.duration:.1f} s audio, RTF {result.real_time_factor:.3f})", file=sys.stderr)
        else:
            prefix = f"[{item}] " if len(args.inputs) > 1 else ""
            print(prefix + result.text)
    return 2 if failures else 0


# ---------------------------------------------------------------------------------------------
# app


def add_app(p) -> None:
    from galwhisper.app import AppConfig as A

    p.add_argument("--model", dest="models", nargs="+", action="extend", metavar="M",
                   help="models offered first (default: base); every RUNS_DIR/*/best-ct2 is offered too")
    p.add_argument("--runs-dir", help=f"folder of training runs to offer ({_default(A, 'runs_dir')})")
    p.add_argument("--language", help=f"the language picker's first value, or auto ({_default(A, 'language')})")
    p.add_argument("--host", help=f"address to listen on, 0.0.0.0: every interface ({_default(A, 'host')})")
    p.add_argument("--port", type=int, help=_default(A, "port"))
    p.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    p.add_argument("--concurrency", type=int, help=f"requests worked on at once ({_default(A, 'concurrency')})")
    add_download_limits(p)


def run_app(args) -> int:
    from galwhisper.app import AppConfig, launch
    from galwhisper.options import build

    given = _given(args)
    launch(build(AppConfig, given, limits=download_limits(given)))
    return 0


# ---------------------------------------------------------------------------------------------
# prepare / train / evaluate / demo


def add_prepare(p) -> None:
    from galwhisper.prepare import PrepareConfig as P

    p.add_argument("--source", required=True, help="cv:DIR | hf:DATASET[:CONFIG] | manifest:FILE | synthetic[:DIR]")
    p.add_argument("--out", dest="out_dir", required=True, help="folder for the prepared splits")
    p.add_argument("--model", help=_default(P, "model"))
    p.add_argument("--language", help=_default(P, "language"))
    p.add_argument("--splits", nargs="*", help="only these splits (default: all)")
    p.add_argument("--max-per-split", type=int, help="take only the first N rows of each split")
    p.add_argument("--num-proc", type=int, help=_default(P, "num_proc"))
    p.add_argument("--min-seconds", type=float, help=_default(P, "min_seconds"))
    p.add_argument("--max-seconds", type=float, help=_default(P, "max_seconds"))
    p.add_argument("--max-label-tokens", type=int, help=_default(P, "max_label_tokens"))
    p.add_argument("--cache-encoder", action="store_true", help="also store the frozen encoder's outputs (cached-encoder mode)")
    p.add_argument("--audio-column", help=f"hf: sources ({_default(P, 'audio_column')})")
    p.add_argument("--text-column", help="hf: sources (default: detected)")
    p.add_argument("--streaming", action="store_true", help="hf: stream instead of downloading")


def run_prepare(args) -> int:
    from galwhisper.options import build
    from galwhisper.prepare import PrepareConfig, prepare

    config = build(PrepareConfig, _given(args))
    summary = prepare(config)
    for split, info in summary["splits"].items():
        print(f"{split}: {info['clips']} clips, {info['seconds'] / 60:.1f} min, {info['skipped']} skipped")
    print(f"prepared in {summary['elapsed_seconds']:.1f} s -> {config.out_dir}")
    return 0


def add_train(p) -> None:
    from galwhisper.train import MODES, PRECISIONS, PRESETS

    p.add_argument("--features", required=True, help="a folder written by galwhisper prepare")
    p.add_argument("--out", required=True, help="run folder (best/, best-ct2/, history, curves)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="the settings below that you do not give come from it")
    p.add_argument("--model")
    p.add_argument("--mode", choices=MODES)
    p.add_argument("--language")
    p.add_argument("--precision", choices=PRECISIONS)
    p.add_argument("--lr-scheduler", help="linear | cosine | constant_with_warmup ...")
    numbers = {int: ("max_steps", "eval_steps", "save_steps", "warmup_steps", "batch_size", "eval_batch_size",
                     "grad_accum", "max_eval_samples", "seed"), float: ("learning_rate", "weight_decay")}
    for kind, names in numbers.items():
        for name in names:
            p.add_argument("--" + name.replace("_", "-"), type=kind)
    p.add_argument("--early-stopping", type=int, metavar="N", help="stop after N evaluations without improvement")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")


def run_train(args) -> int:
    from galwhisper.train import make_config, train

    given = _given(args)
    summary = train(make_config(given.pop("preset", None), **given))
    print(f"best validation WER {100 * (summary['best_wer'] or 0):.2f}% at step {summary['best_step']} "
          f"({summary['steps']} steps, {summary['train_seconds']:.0f} s) -> {args.out}/best, {args.out}/best-ct2")
    return 0


def add_evaluate(p) -> None:
    from galwhisper.evaluate import EvaluateConfig as E

    p.add_argument("--model", action="append", required=True, dest="models", help="repeat for several models")
    p.add_argument("--data", required=True, help="a prepared folder or a source (cv:DIR, manifest:FILE, ...)")
    p.add_argument("--split", help=_default(E, "split"))
    p.add_argument("--language", help=_default(E, "language"))
    p.add_argument("--out", help="folder for results.md/.json, wer.png, per-utterance TSVs")
    p.add_argument("--json", dest="json_path", help="write the JSON results here")
    p.add_argument("--beam-size", type=int, help=_default(E, "beam_size"))
    p.add_argument("--batch-size", type=int, help=_default(E, "batch_size"))
    p.add_argument("--compute-type", help=_default(E, "compute_type"))


def run_evaluate(args) -> int:
    from galwhisper.evaluate import EvaluateConfig, evaluate, markdown_table
    from galwhisper.options import build

    results = evaluate(build(EvaluateConfig, _given(args)))
    print(markdown_table(results), end="")
    return 0


def add_demo(p) -> None:
    from galwhisper.demo import DemoConfig as D

    p.add_argument("--out", help=_default(D, "out"))
    p.add_argument("--fresh", action="store_true", help="rebuild everything instead of reusing")
    p.add_argument("--n-train", type=int, help="training sentences (default: all)")
    p.add_argument("--max-steps", type=int, help="training steps (default: the preset's)")


def run_demo(args) -> int:
    from galwhisper.demo import DemoConfig, run_demo as demo
    from galwhisper.options import build

    given = _given(args)
    overrides = {"max_steps": given.pop("max_steps")} if "max_steps" in given else {}
    demo(build(DemoConfig, given, train_overrides=overrides))
    return 0


# ---------------------------------------------------------------------------------------------


# name -> (help, add its options, run it)
COMMANDS = {
    "prepare": ("corpus -> Whisper features on disk", add_prepare, run_prepare),
    "train": ("fine-tune on prepared features", add_train, run_train),
    "evaluate": ("WER/CER of one or more models on a test split", add_evaluate, run_evaluate),
    "demo": ("the main job: synthetic Galician corpus, WER before/after fine-tuning, report", add_demo, run_demo),
    "transcribe": ("transcribe audio/video files and URLs", add_transcribe, run_transcribe),
    "app": ("serve the web app (microphone, YouTube/URL, audio file)", add_app, run_app),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `command`'s options are added (each command's options import its
    module for their defaults, and `galwhisper transcribe` should not wait for gradio)."""
    parser = _Parser(prog="galwhisper", description="Fine-tune and serve Whisper for Galician.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help, add_options, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help, argument_default=SUPPRESS)
        p.set_defaults(run=run)
        if name == command:
            add_options(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    _quiet_libraries()
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    try:
        return args.run(args)
    except GalwhisperError as exc:
        # In a terminal a progress bar may still hold the line: start the message on its own.
        start = "\n" if sys.stderr.isatty() and args.command in ("prepare", "train", "demo") else ""
        print(f"{start}galwhisper: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("galwhisper: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
