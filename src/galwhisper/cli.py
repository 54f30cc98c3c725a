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


def add_download_limits(p, defaults=None) -> None:
    """The URL caps; `defaults`: the DownloadLimits whose values apply when not given (help texts)."""
    from galwhisper.media import DownloadLimits

    d = defaults or DownloadLimits()
    p.add_argument("--max-download-mb", type=float, help=f"URL size cap (default {d.max_download_mb:g})")
    p.add_argument("--max-duration", type=float, help=f"URL duration cap in seconds; in the app, uploads too (default {d.max_duration:g})")
    p.add_argument("--download-timeout", type=float, help=f"URL download time cap in seconds (default {d.download_timeout:g})")
    p.add_argument("--allow-private-urls", action="store_true",
                   help="allow URLs on loopback, private or link-local addresses (default: refused)")


def download_limits(given: dict, defaults=None):
    """DownloadLimits from the options given, the rest from `defaults` (DownloadLimits' own when None)."""
    import dataclasses

    from galwhisper.media import DownloadLimits
    from galwhisper.options import given as given_only

    names = {f.name for f in dataclasses.fields(DownloadLimits)}
    return dataclasses.replace(defaults or DownloadLimits(), **{k: v for k, v in given_only(given).items() if k in names})


def _number_or_off(kind):
    """argparse type: a number, or "off" (the option's check is turned off)."""
    from galwhisper.transcribe import OFF

    def parse(text: str):
        return OFF if text.strip().lower() == OFF else kind(text)

    parse.__name__ = kind.__name__  # argparse's message: "invalid float value: 'x'"
    return parse


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
    add_repetition_guard(p)
    add_download_limits(p)


def add_repetition_guard(p) -> None:
    from galwhisper.transcribe import TranscribeOptions as T

    p.add_argument("--compression-ratio-threshold", type=_number_or_off(float),
                   help=f"a window whose text compresses better than this loops: decoded again; off: no check "
                        f"({_default(T, 'compression_ratio_threshold')})")
    p.add_argument("--log-prob-threshold", type=_number_or_off(float),
                   help="a window whose average log-probability is below this (e.g. -1.0) is decoded again "
                        f"({_default(T, 'log_prob_threshold')}: off)")
    p.add_argument("--no-repeat-ngram-size", type=int,
                   help=f"no n-gram of this many tokens may repeat within a window, 0: off ({_default(T, 'no_repeat_ngram_size')})")
    p.add_argument("--repetition-penalty", type=float,
                   help=f"> 1 makes tokens already in a window less likely (a window decoded again uses at least 1.2) "
                        f"({_default(T, 'repetition_penalty')})")
    p.add_argument("--max-repeats", type=_number_or_off(int),
                   help=f"a phrase repeated more times in a row loops: decoded again, then cut to one; off: no check "
                        f"({_default(T, 'max_repeats')})")


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
    from galwhisper.app import app_download_limits

    p.add_argument("--model", dest="models", nargs="+", action="extend", metavar="M",
                   help="models offered first (default: base); every RUNS_DIR/*/best-ct2 is offered too")
    p.add_argument("--runs-dir", help=f"folder of training runs to offer ({_default(A, 'runs_dir')})")
    p.add_argument("--language", help=f"the language picker's first value, or auto ({_default(A, 'language')})")
    p.add_argument("--host", help=f"address to listen on, 0.0.0.0: every interface ({_default(A, 'host')})")
    p.add_argument("--port", type=int, help=_default(A, "port"))
    p.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    p.add_argument("--concurrency", type=int, help=f"requests transcribed at once ({_default(A, 'concurrency')})")
    p.add_argument("--download-concurrency", type=int,
                   help=f"URL downloads at once, in slots of their own ({_default(A, 'download_concurrency')})")
    p.add_argument("--live-sessions", type=int, help=f"Live-tab recordings at once ({_default(A, 'live_sessions')})")
    p.add_argument("--max-upload-mb", type=float, help=f"upload size cap ({_default(A, 'max_upload_mb')})")
    p.add_argument("--allow-model-paths", action=argparse.BooleanOptionalAction,
                   help="let visitors type any model folder of this machine (default: only when --host is a "
                        "loopback address and there is no --share)")
    p.add_argument("--auth", action="append", metavar="USER:PASS", help="require this login (repeat for more users)")
    p.add_argument("--auth-file", metavar="FILE", help="require a login from this file's USER:PASS lines")
    add_download_limits(p, app_download_limits())


def run_app(args) -> int:
    from galwhisper.app import AppConfig, app_download_limits, launch
    from galwhisper.options import build

    given = _given(args)
    launch(build(AppConfig, given, limits=download_limits(given, app_download_limits())))
    return 0


# ---------------------------------------------------------------------------------------------
# prepare / train / evaluate / demo


def add_prepare(p) -> None:
    from galwhisper.prepare import PrepareConfig as P

    p.add_argument("--source", required=True, action="append",
                   help="cv:PATH[:LOCALE] | mdc:DATASET_ID | hf:DATASET[:CONFIG][@REVISION] | manifest:FILE | "
                        "synthetic[:DIR]; repeat to merge several sources")
    p.add_argument("--cv-train", choices=["train", "validated"],
                   help="Common Voice train split: train.tsv, or validated.tsv minus dev and test (default train)")
    p.add_argument("--max-per-source", type=int, help="take at most N rows of each split from each source")
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
    p.add_argument("--cache-encoder-layers", type=int, metavar="K",
                   help="cache only the bottom K encoder layers' output: the layers above train (default: all)")
    p.add_argument("--pack", action="store_true", help="train split: pack clips into 30-s windows with their times")
    p.add_argument("--pack-seconds", type=float, help=f"longest packed window ({_default(P, 'pack_seconds')})")
    p.add_argument("--pack-min-seconds", type=float, help=f"shortest packed window ({_default(P, 'pack_min_seconds')})")
    p.add_argument("--pack-singles", type=float, help=f"share of single clips kept beside the windows ({_default(P, 'pack_singles')})")
    p.add_argument("--seed", type=int, help=f"for packing ({_default(P, 'seed')})")
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


def add_harvest(p) -> None:
    from galwhisper.harvest import HarvestConfig as H

    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="a video, page, playlist or channel URL; a folder of media files with .srt/.vtt of the same name; a media file")
    p.add_argument("--out", dest="out_dir", required=True, help="corpus folder: manifest.tsv, harvest.json, clips/")
    p.add_argument("--language", help=f"subtitle and speech language ({_default(H, 'language')})")
    p.add_argument("--model", help=f"model that checks each segment ({_default(H, 'model')}; a fine-tuned run checks better)")
    p.add_argument("--compute-type", help=f"the checking model's ({_default(H, 'compute_type')})")
    p.add_argument("--max-cer", type=float, help=f"drop segments whose CER against the model is over this ({_default(H, 'max_cer')})")
    p.add_argument("--max-bad-share", type=float,
                   help=f"drop a whole video when more of its segments fail the check: out of sync ({_default(H, 'max_bad_share')})")
    p.add_argument("--no-check", action="store_true", help="keep segments without checking them with the model")
    p.add_argument("--auto-subs", action="store_true", help="also use automatic captions (default: human subtitles only)")
    p.add_argument("--subs", help="the subtitle file (.srt/.vtt) of a single media SOURCE")
    p.add_argument("--max-videos", type=int, help="per playlist or channel (default: all)")
    p.add_argument("--max-gap", type=float, help=f"a longer gap between cues ends a segment, seconds ({_default(H, 'max_gap')})")
    p.add_argument("--min-seconds", type=float, help=_default(H, "min_seconds"))
    p.add_argument("--max-seconds", type=float, help=_default(H, "max_seconds"))
    p.add_argument("--validation-ratio", type=float, help=f"share of videos ({_default(H, 'validation_ratio')})")
    p.add_argument("--test-ratio", type=float, help=f"share of videos ({_default(H, 'test_ratio')})")
    add_download_limits(p)


def run_harvest(args) -> int:
    from galwhisper.harvest import HarvestConfig, harvest
    from galwhisper.options import build

    given = _given(args)
    config = build(HarvestConfig, given, limits=download_limits(given))
    summary = harvest(config)
    for message in summary["run"]["warnings"]:
        print(f"galwhisper: warning: {message}", file=sys.stderr)
    for message in summary["errors"].values():
        print(f"galwhisper: error: {message}", file=sys.stderr)
    totals, dropped = summary["totals"], summary["totals"]["segments_dropped"]
    reasons = ", ".join(f"{n} {reason}" for reason, n in dropped.items() if n) or "none"
    print(f"{totals['segments_kept']} segments kept ({totals['hours_kept'] * 60:.1f} min) from {totals['videos']} videos; "
          f"dropped: {reasons} -> {config.out_dir / 'manifest.tsv'}")
    return 2 if summary["errors"] else 0


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
                     "grad_accum", "max_eval_samples", "logging_steps", "seed"),
               float: ("learning_rate", "weight_decay", "timestamp_rate", "max_minutes")}
    for kind, names in numbers.items():
        for name in names:
            p.add_argument("--" + name.replace("_", "-"), type=kind)
    p.add_argument("--early-stopping", type=int, metavar="N", help="stop after N evaluations without improvement")
    p.add_argument("--no-validation", dest="validate", action="store_false", default=None,
                   help="no validation: keep the last weights (when you test them yourself right after)")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")


def run_train(args) -> int:
    from galwhisper.card import chosen_weights
    from galwhisper.train import make_config, train

    given = _given(args)
    summary = train(make_config(given.pop("preset", None), **given))
    print(f"{chosen_weights(summary)} ({summary['steps']} steps, {summary['train_seconds']:.0f} s) -> {args.out}/best, {args.out}/best-ct2")
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
    p.add_argument("--compute-type", help=f"ct2 engine ({_default(E, 'compute_type')})")
    p.add_argument("--card", metavar="RUN", help="add the results to this run's model card (RUN/best/README.md)")
    p.add_argument("--engine", choices=["auto", "ct2", "torch"],
                   help="ct2, torch, or auto: torch in bf16 where the hardware has bf16, else ct2 (default auto)")


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
    p.add_argument("--max-steps", type=int, help="training steps (default: as many as the time left allows)")
    p.add_argument("--minutes", type=float, help=f"the whole demo's wall time; training gets what is left ({_default(D, 'minutes')})")


def run_demo(args) -> int:
    from galwhisper.demo import DemoConfig, run_demo as demo
    from galwhisper.options import build

    given = _given(args)
    overrides = {"max_steps": given.pop("max_steps")} if "max_steps" in given else {}
    demo(build(DemoConfig, given, train_overrides=overrides))
    return 0


# ---------------------------------------------------------------------------------------------


def add_push(p) -> None:
    p.add_argument("run_dir", metavar="RUN", help="a finished run folder (best/ and best-ct2/)")
    p.add_argument("--repo-id", required=True, help="the hub repository, e.g. you/whisper-small-gl")
    p.add_argument("--private", action="store_true", help="create the repository private")


def run_push(args) -> int:
    from pathlib import Path

    from galwhisper.card import push

    print(push(Path(args.run_dir), args.repo_id, getattr(args, "private", False)))
    return 0


# name -> (help, add its options, run it)
COMMANDS = {
    "harvest": ("subtitled video and audio -> a corpus checked by a model (manifest.tsv)", add_harvest, run_harvest),
    "prepare": ("corpus -> Whisper features on disk", add_prepare, run_prepare),
    "train": ("fine-tune on prepared features", add_train, run_train),
    "evaluate": ("WER/CER of one or more models on a test split", add_evaluate, run_evaluate),
    "demo": ("the main job: synthetic Galician corpus, WER before/after fine-tuning, report", add_demo, run_demo),
    "transcribe": ("transcribe audio/video files and URLs", add_transcribe, run_transcribe),
    "app": ("serve the web app (microphone, live, YouTube/URL, audio file)", add_app, run_app),
    "push": ("upload a run (best/ and best-ct2/, with its model card) to the Hugging Face hub", add_push, run_push),
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
