"""lmbench tokenizers as `transformers.PreTrainedTokenizerFast`: one exporter per kind, registered in `EXPORTERS`.

    hf_tokenizer = EXPORTERS.get(kind)(tokenizer, start_id)

The exported tokenizer gives the ids lmbench's `encode` gives (tested on real corpora), built from the `tokenizers`
library's own parts:
- `char`: a WordLevel model over the characters (a pre-tokenizer splitting every character), `Lowercase` when
  configured;
- `word`: a WordLevel model over the words, split by lmbench's regular expression (or on whitespace when
  `pretokenized`); the `razdel` backend has no `tokenizers` equivalent and is refused. Decoding joins words with
  spaces and applies transformers' clean-up (no space before ``, . ! ?`` and contractions), which is close to but
  simpler than lmbench's detokenizer (brackets, quotes and capitalisation stay as tokenized);
- `bpe` (sentencepiece): a BPE (merges ranked by the pieces' order, as transformers converts sentencepiece models)
  or Unigram model over the same pieces and scores, with sentencepiece's whitespace handling (``▁``, no dummy
  prefix) and byte fallback; only the `identity` normalisation (the default) is exported;
- `hf`: the transformers tokenizer itself.

Special tokens: lmbench's pad/bos/eos/unk become the tokenizer's; extra symbols (``<sep>``, sentencepiece's
user-defined symbols such as ``"\\n"``) are added tokens matched whole, as lmbench does. The BOS of an exported
char/word/bpe tokenizer is the token every training document started with (lmbench's BOS for `documents` batches,
its EOS for `packed` streams), and `tokenizer(text)` prepends it (so does lm-evaluation-harness's prefix token):
the ids a prompt gets in `lmbench sample`. `decode(..., skip_special_tokens=True)` drops pad/bos/eos and unk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lmbench.errors import SpecError
from lmbench.registry import Registry
from lmbench.tokenizers.base import SPECIAL_TOKENS, Tokenizer

Exporter = Callable[[Tokenizer, int], Any]  # (tokenizer, start id) -> PreTrainedTokenizerFast
EXPORTERS: Registry[Exporter] = Registry("tokenizer.kind")
SPACE = "▁"  # sentencepiece's whitespace marker (U+2581)


@EXPORTERS.register("hf")
def export_hf(tokenizer: Any, start_id: int) -> Any:
    """The transformers tokenizer as lmbench used it (its extra special tokens included)."""
    return tokenizer.hf


@EXPORTERS.register("char")
def export_char(tokenizer: Any, start_id: int) -> Any:
    from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers

    rust = _word_level(tokenizer)
    if tokenizer.config.lowercase:
        rust.normalizer = normalizers.Lowercase()
    rust.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character
    rust.decoder = decoders.Fuse()
    return _fast(rust, tokenizer, start_id, clean_up_spaces=False)


@EXPORTERS.register("word")
def export_word(tokenizer: Any, start_id: int) -> Any:
    from tokenizers import Regex, normalizers, pre_tokenizers

    from lmbench.tokenizers.word import WORD_PATTERN

    config = tokenizer.config
    if config.backend == "razdel" and not config.pretokenized:
        raise SpecError("tokenizer.params.backend", "razdel's splitting rules have no equivalent in the `tokenizers` "
                                                    "library; export supports backend: regex (or pretokenized: true)")
    rust = _word_level(tokenizer)
    if config.lowercase:
        rust.normalizer = normalizers.Lowercase()
    rust.pre_tokenizer = (pre_tokenizers.WhitespaceSplit() if config.pretokenized
                          else pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="removed", invert=True))
    return _fast(rust, tokenizer, start_id, clean_up_spaces=True)  # no decoder: words joined by spaces


@EXPORTERS.register("bpe")
def export_sentencepiece(tokenizer: Any, start_id: int) -> Any:
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    from lmbench.tokenizers.bpe import PIECES, _symbols

    config = tokenizer.config
    if config.normalization_rule_name != "identity":
        raise SpecError("tokenizer.params.normalization_rule_name",
                        f"{config.normalization_rule_name!r} (sentencepiece's precompiled normalisation) is not "
                        "exported; export supports identity (the default)")
    sp = tokenizer._sp
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    if config.model_type == "bpe":
        vocab = {piece: i for i, piece in enumerate(pieces)}
        model = models.BPE(vocab, sentencepiece_merges(vocab), unk_token=PIECES["unk"], fuse_unk=True,
                           byte_fallback=config.byte_fallback)
    else:
        model = models.Unigram([(p, sp.get_score(i)) for i, p in enumerate(pieces)], unk_id=sp.unk_id(),
                               byte_fallback=config.byte_fallback)
    rust = RustTokenizer(model)
    # sentencepiece without a dummy prefix: spaces become ▁ and every ▁ starts a new word (split_by_whitespace)
    rust.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="never", split=True)
    rust.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()])
    return _fast(rust, tokenizer, start_id, clean_up_spaces=False, symbols=_symbols(config))


def sentencepiece_merges(vocab: dict[str, int]) -> list[tuple[str, str]]:
    """BPE merges of a sentencepiece BPE vocabulary: every split of a piece into two pieces, ranked by the merged
    piece's id (sentencepiece orders BPE pieces by score), as transformers' converter (`generate_merges`) does;
    its `SentencePieceExtractor` changed signature between the releases lmbench supports and needs protobuf."""
    merges: list[tuple[int, int, int, str, str]] = []
    for piece, rank in vocab.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                merges.append((rank, vocab[left], vocab[right], left, right))
    return [(left, right) for *_, left, right in sorted(merges)]


def _word_level(tokenizer: Any) -> Any:
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import models

    vocab = {token: i for i, token in enumerate(tokenizer.tokens())}
    return RustTokenizer(models.WordLevel(vocab, unk_token=SPECIAL_TOKENS[3]))


def _fast(rust: Any, tokenizer: Any, start_id: int, *, clean_up_spaces: bool, symbols: list[str] | None = None) -> Any:
    """A PreTrainedTokenizerFast around `rust` with lmbench's special tokens and extra symbols, prepending the
    start token to every encoded text."""
    from tokenizers import AddedToken, processors
    from transformers import PreTrainedTokenizerFast

    token = rust.id_to_token
    specials = [token(i) for i in (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id, tokenizer.unk_id)]
    rust.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    extra = list(symbols if symbols is not None else getattr(tokenizer.config, "specials", []))
    rust.add_tokens([AddedToken(t, special=False, normalized=False) for t in extra if t not in specials])
    start = token(start_id)
    rust.post_processor = processors.TemplateProcessing(single=f"{start} $A", pair=f"{start} $A $B",
                                                        special_tokens=[(start, start_id)])
    fast = PreTrainedTokenizerFast(tokenizer_object=rust, bos_token=start, eos_token=token(tokenizer.eos_id),
                                   pad_token=token(tokenizer.pad_id), unk_token=token(tokenizer.unk_id),
                                   clean_up_tokenization_spaces=clean_up_spaces,
                                   model_input_names=["input_ids", "attention_mask"])  # no token_type_ids
    return fast  # <sep> stays an ordinary added token: decode keeps it, as lmbench's does
