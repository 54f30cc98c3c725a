"""WER and CER, raw and Whisper-normalised, with jiwer doing the alignment.

"Whisper-normalised" uses transformers' BasicTextNormalizer (lower case, punctuation and
symbols removed, whitespace collapsed), the normaliser the Whisper paper uses for languages
other than English. Accents are kept: "é" (is) and "e" (and) are different Galician words.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import jiwer


@lru_cache(maxsize=1)
def _normalizer():
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer

    return BasicTextNormalizer()


def normalize(text: str) -> str:
    return " ".join(_normalizer()(text).split())


@dataclass
class ErrorRates:
    wer: float  # normalised, a fraction (0.263 for 26.3%)
    cer: float
    wer_raw: float
    cer_raw: float
    substitutions: int  # normalised word errors
    deletions: int
    insertions: int
    reference_words: int
    utterances: int

    def to_dict(self) -> dict:
        return asdict(self)


def _safe(refs: list[str], hyps: list[str]) -> tuple[list[str], list[str]]:
    """jiwer refuses empty references; drop those pairs (an empty reference has no words)."""
    pairs = [(r, h) for r, h in zip(refs, hyps) if r.strip()]
    return [r for r, _ in pairs], [h for _, h in pairs]


def error_rates(references: list[str], hypotheses: list[str]) -> ErrorRates:
    if len(references) != len(hypotheses):
        raise ValueError("references and hypotheses differ in length")
    raw_refs, raw_hyps = _safe(references, hypotheses)
    norm_refs, norm_hyps = _safe([normalize(r) for r in references], [normalize(h) for h in hypotheses])
    if not norm_refs:
        raise ValueError("no non-empty references")
    words = jiwer.process_words(norm_refs, norm_hyps)
    return ErrorRates(
        wer=words.wer,
        cer=jiwer.cer(norm_refs, norm_hyps),
        wer_raw=jiwer.wer(raw_refs, raw_hyps),
        cer_raw=jiwer.cer(raw_refs, raw_hyps),
        substitutions=words.substitutions,
        deletions=words.deletions,
        insertions=words.insertions,
        reference_words=sum(len(r.split()) for r in norm_refs),
        utterances=len(references),
    )


def utterance_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word errors, reference words) of one utterance, normalised."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    if not ref:
        return len(hyp.split()), 0
    out = jiwer.process_words(ref, hyp)
    return out.substitutions + out.deletions + out.insertions, len(ref.split())


def segment_start_errors(reference: list[tuple[float, float, str]], hypothesis: list[tuple[float, float, str]],
                         window: float = 3.0) -> list[float]:
    """For each reference segment (start, end, text), how far (seconds) the start of the
    hypothesis segment that best matches its text (lowest CER, among those within `window`
    seconds of it) is from the true start. A reference with no hypothesis near it counts as
    `window`. Two sentences merged into one hypothesis segment cost the second its start."""
    errors = []
    for start, end, text in reference:
        near = [h for h in hypothesis if h[1] >= start - window and h[0] <= end + window and normalize(h[2])]
        if not near or not normalize(text):
            errors.append(window)
            continue
        best = min(near, key=lambda h: (jiwer.cer(normalize(text), normalize(h[2])), abs(h[0] - start)))
        errors.append(min(abs(best[0] - start), window))
    return errors
