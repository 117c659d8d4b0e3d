"""Did a finished run learn? The checks behind summary.json's `diverged` flag (the report lists such cells apart
and never ranks them; the grid's closing message names them).

A run diverged, or failed to learn, when any of these holds:
- its final validation loss is not below the untrained model's (eval.untrained), or, without that evaluation,
  not below ln(vocabulary size), the loss of a uniform guess;
- its last logged training loss is above its first by more than RISE_TOLERANCE (5%: a fine-tuned model whose loss
  starts low and only wobbles is not flagged);
- its last logged training loss is above `train.divergence_factor` x its lowest (the loss blew up and stayed up);
- `train.stop_on_divergence` stopped it.
"""

from __future__ import annotations

import math

RISE_TOLERANCE = 0.05


def divergence_reason(*, final_val_loss: float | None, untrained_val_loss: float | None, vocab_size: int,
                      first_train_loss: float | None, last_train_loss: float | None, min_train_loss: float | None,
                      factor: float, stopped: bool = False) -> str | None:
    """Why the run counts as diverged (one line), or None when it learned."""
    if stopped:
        return (f"stopped by train.stop_on_divergence: training loss {last_train_loss:.4g} over its lowest "
                f"{min_train_loss:.4g}")
    if final_val_loss is not None and math.isfinite(final_val_loss):
        if untrained_val_loss is not None and final_val_loss >= untrained_val_loss:
            return (f"final validation loss {final_val_loss:.4g} is not below the untrained model's "
                    f"{untrained_val_loss:.4g}")
        uniform = math.log(vocab_size) if vocab_size > 1 else math.inf
        if untrained_val_loss is None and final_val_loss >= uniform:
            return f"final validation loss {final_val_loss:.4g} is not below ln(vocabulary) = {uniform:.4g}"
    if first_train_loss is not None and last_train_loss is not None \
            and last_train_loss > first_train_loss * (1 + RISE_TOLERANCE):
        return f"training loss ended at {last_train_loss:.4g}, above where it started ({first_train_loss:.4g})"
    if min_train_loss is not None and last_train_loss is not None and last_train_loss > factor * min_train_loss:
        return (f"training loss ended at {last_train_loss:.4g}, over {factor:g} x its lowest "
                f"({min_train_loss:.4g}; train.divergence_factor)")
    return None
