"""Decoding strategies and their comparison: pure logit filters, batched cached search loops, sampler metrics.

    rows = sample_texts(model, tokenizer, spec.sample, device, start_id=prompt_start_id(spec.data, tokenizer))
    table = sampler_metrics(rows, model, tokenizer, reference=(ref_model, ref_tokenizer))
"""

from __future__ import annotations

from lmbench.sampling.metrics import sampler_metrics
from lmbench.sampling.search import generate, prompt_start_id, sample_texts, sampler_name

__all__ = ["generate", "prompt_start_id", "sample_texts", "sampler_metrics", "sampler_name"]
