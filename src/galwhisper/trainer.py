"""transformers' Trainer as galwhisper trains with it: validation WER at every evaluation, a guard
on the loss, checkpoints marked complete only once written. Imported by train.train() only, so
that the CLI does not pay for importing Trainer before it is needed."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback

from galwhisper.errors import GalwhisperError
from galwhisper.train import COMPLETE, last_complete, rotate


class GalwhisperTrainer(Trainer):
    """Trainer + `wer_of(model)`'s metrics at every evaluation + a NaN/inf guard on the loss."""

    def __init__(self, *args, wer_of=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.wer_of = wer_of

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
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            (folder / COMPLETE).write_text(str(state.global_step))
            rotate(Path(args.output_dir), state.best_model_checkpoint)
        return control


class FinalEvaluation(TrainerCallback):
    """Evaluate and save at the last step too, so the final weights compete for best."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_evaluate = control.should_save = True
        return control
