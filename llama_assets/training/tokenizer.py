"""A byte-level BPE tokenizer trained on the corpus itself, for the tiny variant.

Nothing may download at run time, so the tiny model cannot borrow Llama's
tokenizer: it gets one trained here in well under a second. It is byte-level
(like Llama 3's), so any text round-trips and no token is ever unknown, and it
uses Llama 3's special-token names, so code written against real Llama
tokenizers works unchanged. The chat template is stored on the tokenizer, so
it travels with the checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

BOS_TOKEN = "<|begin_of_text|>"
EOS_TOKEN = "<|end_of_text|>"
PAD_TOKEN = "<|pad|>"
SPECIAL_TOKENS = (BOS_TOKEN, EOS_TOKEN, PAD_TOKEN)  # ids 0, 1, 2

# One turn per message, closed by the eos token so that generation stops after
# the assistant's turn. Deliberately minimal: the tiny model has no chat tuning.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 4096) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts` and wrap it as a transformers tokenizer.

    Deterministic: the same texts in the same order give the same vocabulary and
    merges. Encoding adds no special tokens; callers (packing, chat template)
    place bos/eos themselves.
    """
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must cover the 256 bytes + specials, got {vocab_size}")
    tok = Tokenizer(models.BPE())
    # GPT-2/Llama-3 style: split on words/spaces, then map bytes to printable chars.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        # All 256 byte symbols, so text with unseen bytes still encodes.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        clean_up_tokenization_spaces=False,
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped
