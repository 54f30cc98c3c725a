"""transformers' Trainer as galwhisper trains with it: validation WER at every evaluation, a guard
on the loss, checkpoints marked complete only once written. Imported by train.train() only, so
that the CLI does not pay for importing Trainer before it is needed."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from galwhisper.errors import GalwhisperError
from galwhisper.train import COMPLETE, last_complete, rotate


class GalwhisperTrainer(Trainer):
    """Trainer + `wer_of(model)`'s metrics at every evaluation + a NaN/inf guard on the loss,
    + with a `budget`, a linear schedule that ends where the time budget ends."""

    def __init__(self, *args, wer_of=None, budget: "TimeBudget | None" = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.wer_of, self.budget = wer_of, budget
        if budget is not None:
            self.add_callback(budget)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.budget is None or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        self.budget.steps = num_training_steps  # until the first steps are timed
        # The budget itself is the schedule's function: LambdaLR saves a callable object's
        # attributes with the checkpoint, so a resumed run keeps the number of steps.
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, self.budget)
        return self.lr_scheduler

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        output.metrics.update({f"{metric_key_prefix}_{k}": v for k, v in self.wer_of(self.model).items()})
        return output

    def training_step(self, *args, **kwargs):
        loss = super().training_step(*args, **kwargs)
        if not torch.isfinite(loss).all():
            last = last_complete(Path(self.args.output_dir))
            raise GalwhisperError(
                f"training loss became {loss.item()} at step {self.state.global_step + 1}; stopped. "
                f"Last good checkpoint: {last or 'none'}. Lower --learning-rate or use --precision fp32"
            )
        return loss


class CheckpointMarker(TrainerCallback):
    """Marks each checkpoint complete once Trainer has written all of it, then rotates."""

    def on_save(self, args, state, control, **kwargs):
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()  # every process has written its part (its RNG state)
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            (folder / COMPLETE).write_text(str(state.global_step))
            rotate(Path(args.output_dir), state.best_model_checkpoint)
        return control


class FinalEvaluation(TrainerCallback):
    """Evaluate (unless there is no validation) and save at the last step too, so the final
    weights compete for best."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_evaluate, control.should_save = validates(args), True
        return control


def validates(args) -> bool:
    """Whether the run validates at all (train --no-validation sets the eval strategy "no")."""
    return args.eval_strategy != "no"


class CachedBottomEncoder(WhisperEncoder):
    """A WhisperEncoder trained above a cache: given the hidden state after its bottom
    `cached_layers` layers (batch, 1500, d_model; stored by `prepare --cache-encoder`), it runs
    only the layers above and the final norm. Given log-mels (batch, n_mels, 3000), as
    generate() passes during validation, it is the whole encoder. Same weights and names as
    WhisperEncoder, so checkpoints and exports are those of a normal Whisper model."""

    cached_layers = 0

    def forward(self, input_features, attention_mask=None, **kwargs):
        if input_features.shape[1] == self.config.num_mel_bins:  # log-mels, not cached states (1500 rows)
            return super().forward(input_features, attention_mask, **kwargs)
        hidden = input_features
        for layer in self.layers[self.cached_layers :]:
            hidden = layer(hidden, None, **kwargs)
        return BaseModelOutput(last_hidden_state=self.layer_norm(hidden))


def train_above_cache(model, cached_layers: int) -> None:
    """Make `model`'s encoder a CachedBottomEncoder over `cached_layers` frozen bottom layers."""
    encoder = model.model.encoder
    encoder.__class__ = CachedBottomEncoder  # same module, same weights; only forward differs
    encoder.cached_layers = cached_layers
    for module in (encoder.conv1, encoder.conv2, encoder.embed_positions, *encoder.layers[:cached_layers]):
        module.requires_grad_(False)
    encoder.layer_norm.requires_grad_(cached_layers < len(encoder.layers))


class TimeBudget(TrainerCallback):
    """Train for `minutes` of wall time: from the first few steps on, the number of steps is set
    (and renewed after each step) from the time a step takes on this machine, data loading and
    logging between steps included (never above max_steps), and the learning rate, warmed up
    linearly for `warmup` steps, decays linearly to zero at that step. A resumed run counts the
    steps it already has at that rate. Under torchrun the first process's estimate is used by all."""

    def __init__(self, minutes: float, warmup: int, calibration_steps: int = 3):
        self.minutes, self.warmup, self.calibration_steps = minutes, warmup, calibration_steps
        self.steps = 0
        self._started, self._first_step = 0.0, 0
        self._first_end, self._ended = 0.0, 0  # the first step's end, steps ended since

    def __call__(self, step: int) -> float:
        """The learning rate's factor at `step`."""
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        return max(0.0, (self.steps - step) / max(1, self.steps - self.warmup))

    def on_train_begin(self, args, state, control, **kwargs):
        self._started, self._first_step = time.perf_counter(), state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self._ended += 1
        if self._ended == 1:
            self._first_end = now
        if self._ended > self.calibration_steps:  # the first step is warm-up: not the rate
            # Timing only inside steps left out ~1 s a step here and the slow first step: the
            # demo's training ran 22 s (7%) past its budget (AMD EPYC, 2 cores). The plan is
            # renewed after every step, as a shared machine's speed drifts: steps timed at 11.7 s
            # averaged 12.8 s in one demo run: 31 s past a plan fixed after three steps.
            step_seconds = (now - self._first_end) / (self._ended - 1)
            left = self.minutes * 60 - (now - self._started) - self._first_step * step_seconds
            planned = max(state.global_step, min(state.max_steps, state.global_step + int(left / step_seconds)))
            self.steps = _same_everywhere(planned)
            if self._ended == self.calibration_steps + 1:
                print(f"train: {step_seconds:.1f} s a step here: {self.steps} steps fit the {self.minutes:g}-minute budget", flush=True)
        if self.steps and state.global_step >= self.steps:
            control.should_training_stop = True
            control.should_evaluate, control.should_save = validates(args), True  # the last weights compete for best
        return control


def _same_everywhere(value: int) -> int:
    """The first process's value, in every process (a lone process: the value)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return int(box[0])
