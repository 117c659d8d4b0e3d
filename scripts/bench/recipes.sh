#!/usr/bin/env bash
# The recipe measurements in results/bench/recipes.md, one command each (run from the repository root, on a quiet
# machine: another process on the same cores slows torch's thread pool many times over).
set -euo pipefail
cd "$(dirname "$0")/../.."

# Quickstart: wall time and the report's table (results/quickstart/report.md).
time lmbench run experiments/quickstart.yaml

# Tiny Shakespeare, character level: best full-validation loss in 140 s of training.
time lmbench run experiments/shakespeare_char_140s.yaml

# WikiText-2: LSTM 2 x 200, one epoch, validation and test perplexity and tokens/s.
time lmbench run experiments/wikitext2_lstm.yaml --cell arch=lstm train.epochs=1

# WritingPrompts and the TinyStories sample: validation bits per byte and generated stories, on CPU budgets.
# (The 180 s run goes to its own results root: a completed cell is skipped, not re-run.)
WP_PROMPTS='["[ WP ] You wake up one morning to find that everyone else has vanished . <sep>", "[ WP ] A dragon applies for a job at a bank . <sep>", "[ WP ] The last human on Earth hears a knock at the door . <sep>"]'
time lmbench run experiments/writingprompts.yaml --results results/wp-180s train.max_seconds=180 train.warmup_steps=100 \
    sample.prompts="$WP_PROMPTS" 'sample.samplers=[{kind: sample, temperature: 0.8}]' sample.max_new_tokens=200
time lmbench run experiments/writingprompts.yaml train.max_seconds=600 train.warmup_steps=30 train.eval_every=40 \
    sample.prompts="$WP_PROMPTS" 'sample.samplers=[{kind: sample, temperature: 0.8}]' sample.max_new_tokens=200
time lmbench run experiments/tinystories_local.yaml train.max_seconds=180 sample.num_samples=3

# WritingPrompts, decoder-only (prompt masked) against an encoder-decoder (T5 from a config) of about the same size:
# validation bits per byte of the stories in one table, 300 s of training each (results/writingprompts_seq2seq/).
time lmbench run experiments/writingprompts_seq2seq.yaml

# The T5 seed offline: pair loss, training on the local pairs, greedy and beam translation.
time lmbench run experiments/t5_pairs.yaml
