"""The one log-mel and label path, used by prepare, train, evaluate and transcribe.

Why faster-whisper's feature path and not transformers' WhisperFeatureExtractor: the fast
engine (CTranslate2 through faster-whisper) computes the log-mel of the *unpadded* audio and
pads the mel with zeros to 3000 frames, whereas WhisperFeatureExtractor pads the audio to 30 s
first, which changes the normalisation and the padded region (seen to change transcripts).
A model fine-tuned here is served by faster-whisper, so training must see exactly what
inference will feed it. We call faster-whisper's own FeatureExtractor, so there is no copy of
the maths that could drift. A bonus: unpadded mels are stored at their real length (a 4 s clip
is 400 frames, not 3000), so prepared data sets are ~7x smaller.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from galwhisper.audio import SAMPLE_RATE

HOP_LENGTH = 160
N_FRAMES = 3000  # 30 s, the encoder's fixed input length
MAX_SECONDS = N_FRAMES * HOP_LENGTH / SAMPLE_RATE
MAX_TARGET_TOKENS = 448  # the decoder's context: prompt + text + <|endoftext|>
MAX_NEW_TOKENS = MAX_TARGET_TOKENS - 8  # what one window may generate after its prompt


@lru_cache(maxsize=4)
def _extractor(n_mels: int):
    from faster_whisper.feature_extractor import FeatureExtractor

    return FeatureExtractor(feature_size=n_mels)


def log_mel(audio: np.ndarray, n_mels: int = 80) -> np.ndarray:
    """(n_mels, frames) float32 log-mel of 16 kHz audio, unpadded, as faster-whisper computes it.

    Mirrors BatchedInferencePipeline: `feature_extractor(chunk)[..., :-1]` per chunk of <= 30 s.
    """
    mel = _extractor(n_mels)(np.asarray(audio, dtype=np.float32))[..., :-1]
    return mel[:, :N_FRAMES].astype(np.float32, copy=False)


def pad_or_trim(mel: np.ndarray, n_frames: int = N_FRAMES) -> np.ndarray:
    """Zero-pad (or cut) the time axis to `n_frames`, as faster-whisper does before encoding."""
    frames = mel.shape[-1]
    if frames >= n_frames:
        return mel[..., :n_frames]
    pad = [(0, 0)] * (mel.ndim - 1) + [(0, n_frames - frames)]
    return np.pad(mel, pad)


def model_input(audio: np.ndarray, n_mels: int = 80) -> np.ndarray:
    """(n_mels, 3000) encoder input for one clip of <= 30 s."""
    return pad_or_trim(log_mel(audio, n_mels))


def stack_inputs(mels: list[np.ndarray]) -> np.ndarray:
    """(batch, n_mels, 3000) float32 from unpadded mels of any length <= 3000 frames."""
    n_mels = mels[0].shape[0]
    batch = np.zeros((len(mels), n_mels, N_FRAMES), dtype=np.float32)
    for i, mel in enumerate(mels):
        frames = min(mel.shape[-1], N_FRAMES)
        batch[i, :, :frames] = mel[:, :frames]
    return batch


# ---------------------------------------------------------------------------------------------
# Labels


def token_id(tokenizer, token: str) -> int:
    """The id of special token `token`, looked up by name (ids differ between model families)."""
    found = tokenizer.convert_tokens_to_ids(token)
    if found is None or tokenizer.convert_ids_to_tokens(found) != token:
        from galwhisper.errors import GalwhisperError

        raise GalwhisperError(f"{token}: not in this model's tokenizer")
    return int(found)


def prompt_ids(tokenizer, language: str | None, task: str = "transcribe", timestamps: bool = False) -> list[int]:
    """<|startoftranscript|><|lang|><|task|>, then <|notimestamps|> unless the text is timed."""
    tokens = ["<|startoftranscript|>"]
    if language:
        tokens.append(f"<|{language}|>")
    tokens.append(f"<|{task}|>")
    if not timestamps:
        tokens.append("<|notimestamps|>")
    return [token_id(tokenizer, token) for token in tokens]


def _text_ids(tokenizer, text: str) -> list[int]:
    # A leading space, as Whisper itself emits the first word (" Bo día").
    return tokenizer.encode(" " + text.strip(), add_special_tokens=False)


def label_ids(tokenizer, text: str, language: str | None, task: str = "transcribe") -> list[int]:
    """Full decoder sequence without times: prompt + text tokens + <|endoftext|>."""
    return prompt_ids(tokenizer, language, task) + _text_ids(tokenizer, text) + [tokenizer.eos_token_id]


TIME_PRECISION = 0.02  # seconds per timestamp token, <|0.00|> .. <|30.00|>


def timestamp_token(seconds: float) -> str:
    steps = round(min(max(seconds, 0.0), MAX_SECONDS) / TIME_PRECISION)
    return f"<|{steps * TIME_PRECISION:.2f}|>"


def timed_label_ids(tokenizer, segments, language: str | None, task: str = "transcribe") -> list[int]:
    """Full decoder sequence with times, as Whisper was trained on 30-s windows: prompt, then per
    segment <|start|> text <|end|>, then <|endoftext|>. segments: (start, end, text) in seconds
    from the window's start."""
    ids = prompt_ids(tokenizer, language, task, timestamps=True)
    for start, end, text in segments:
        ids += [token_id(tokenizer, timestamp_token(start)), *_text_ids(tokenizer, text), token_id(tokenizer, timestamp_token(end))]
    return ids + [tokenizer.eos_token_id]


# Speech carries at most ~4 words (~8 tokens) a second. A hypothesis far longer than that is a
# hallucinated loop; stopping it early keeps a zero-shot evaluation from spending minutes on
# repeated words while still counting every one of them as an error.
TOKENS_PER_SECOND = 8


def token_budget(seconds: float, cap: int = MAX_NEW_TOKENS) -> int:
    """How many tokens a clip of `seconds` may produce before decoding is cut off."""
    return max(16, min(cap, int(TOKENS_PER_SECOND * seconds) + 16))


def length_batches(seconds, batch_size: int) -> list[list[int]]:
    """Row indices in batches of clips of similar length, longest first: a batch's token budget
    (from its longest clip) then fits each clip in it, so a clip's transcript does not depend on
    its neighbours, and a looping hypothesis is not decoded past its own clip's budget."""
    order = np.argsort(-np.asarray(seconds, dtype=np.float64), kind="stable")
    return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]


# ---------------------------------------------------------------------------------------------
# Encoder states, for caching the bottom of a frozen encoder


def encoder_states(encoder, input_features, layers: int):
    """The hidden state of a transformers WhisperEncoder after its bottom `layers` layers,
    (batch, 1500, d_model), as WhisperEncoder.forward computes it (no dropout: frozen and
    evaluated once). With all layers, the final layer norm is not applied here either: the
    model applies it (and any layers above the cache) when it trains from these states."""
    import torch

    hidden = torch.nn.functional.gelu(encoder.conv1(input_features))
    hidden = torch.nn.functional.gelu(encoder.conv2(hidden)).permute(0, 2, 1)
    hidden = hidden + encoder.embed_positions.weight[: hidden.shape[1]]
    for layer in encoder.layers[:layers]:
        hidden = layer(hidden, None)
    return hidden
