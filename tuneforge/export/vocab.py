"""A Hugging Face tokenizer as GGUF metadata, so that llama.cpp tokenizes as transformers does.

Two kinds of tokenizer.json, the two llama.cpp has tokenizers for:
- byte-level BPE (SmolLM2, Llama 3): `tokenizer.ggml.model = gpt2`, the tokens in their byte-level spelling,
  the merges, and the pre-tokenizer's name. llama.cpp knows pre-tokenizers by name only; its converter finds
  the name by hashing the tokenization of a fixed text (`CHECK_TEXT`), and so do we, for the names below.
- SentencePiece-style BPE with byte fallback (Gemma 3, Llama 2, Mistral): `tokenizer.ggml.model = llama`,
  the pieces with scores. llama.cpp merges the adjacent pair whose result has the highest score, where
  transformers applies the merge of lowest rank: a token's score is minus the rank of the first merge that
  makes it, and the two agree.
Special ids, add-BOS and the chat template come from gguf.SpecialVocab, as in llama.cpp's converter.
"""

from __future__ import annotations

import json
import re
from hashlib import sha256
from pathlib import Path
from typing import Any

import gguf

from tuneforge.errors import UserError
from tuneforge.export.architectures import CONVERTER_HINT

# llama.cpp's chktxt (conversion/base.py, get_vocab_base_pre), verbatim
CHECK_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n\U0001f680 (normal) \U0001f636\u200d\U0001f32b\ufe0f (multiple "
    "emojis concatenated) \u2705 \U0001f999\U0001f999 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 "
    "\u1780\u17b6\u1793\u17cb\u178f\u17c2\u1796\u17b7\u179f\u17c1\u179f\u17a2\u17b6\u1785\U0001f601 ?\u6211\u60f3"
    "\u5728apple\u5de5\u4f5c1314151\u5929\uff5e ------======= \u043d\u0435\u0449\u043e \u043d\u0430 \u0411\u044a"
    "\u043b\u0433\u0430\u0440\u0441\u043a\u0438 ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there,"
    " 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
# sha256 of str(tokenizer.encode(CHECK_TEXT)) -> llama.cpp's pre-tokenizer name (from its converter's table)
PRE_TOKENIZERS = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "0fe1cf6eda062318a1af7270f3331a85c539a01778ff948e24388e949c5282f4": "gpt-2",
}


def add_vocab(writer: gguf.GGUFWriter, tokenizer: Any, folder: Path, n_vocab: int) -> None:
    """Write the tokenizer saved in `folder` (tokenizer.json, tokenizer_config.json, config.json; `tokenizer` is
    it loaded) for a model whose embedding has `n_vocab` rows."""
    spec = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    model = spec["model"]
    if model["type"] != "BPE":
        raise UserError(f"a {model['type']} tokenizer is not exported to GGUF here: {CONVERTER_HINT}")
    if model.get("byte_fallback"):
        _add_sentencepiece(writer, tokenizer, spec, n_vocab)
    else:
        _add_byte_level(writer, tokenizer, n_vocab)
    special = gguf.SpecialVocab(folder, load_merges=not model.get("byte_fallback"), n_vocab=n_vocab)
    special.add_special_token["bos"] = _adds_bos(tokenizer)  # what the tokenizer does, whatever its files say
    special.add_to_gguf(writer, quiet=True)


def pre_tokenizer(tokenizer: Any) -> str:
    digest = sha256(str(tokenizer.encode(CHECK_TEXT)).encode()).hexdigest()
    if digest not in PRE_TOKENIZERS:
        raise UserError(f"this tokenizer's pre-tokenizer is not one the exporter knows (hash {digest[:12]}): "
                        f"{CONVERTER_HINT}")
    return PRE_TOKENIZERS[digest]


def _add_byte_level(writer: gguf.GGUFWriter, tokenizer: Any, n_vocab: int) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer(tokenizer))
    tokens, types = _tokens_and_types(tokenizer, n_vocab, byte_tokens=False)
    writer.add_token_list(tokens)
    writer.add_token_types(types)


def _add_sentencepiece(writer: gguf.GGUFWriter, tokenizer: Any, spec: dict, n_vocab: int) -> None:
    tokens, types = _tokens_and_types(tokenizer, n_vocab, byte_tokens=True)
    vocab = spec["model"]["vocab"]
    first_merge: dict[int, int] = {}
    for rank, merge in enumerate(spec["model"]["merges"]):
        left, right = merge if isinstance(merge, list) else merge.split(" ", 1)
        first_merge.setdefault(vocab.get(left + right, -1), rank)
    never = len(spec["model"]["merges"])  # single characters: no merge makes them
    scores = [-float(first_merge.get(i, never)) if t == gguf.TokenType.NORMAL else
              0.0 if t == gguf.TokenType.BYTE else -1000.0 for i, t in enumerate(types)]
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_add_space_prefix(_prepends_space(spec))


def _tokens_and_types(tokenizer: Any, n_vocab: int, byte_tokens: bool) -> tuple[list[str], list[int]]:
    """Every id's token as the vocabulary spells it, and its kind: special (CONTROL), added (USER_DEFINED,
    pre-normalized as llama.cpp expects), a byte-fallback piece (BYTE), or an id no token has (UNUSED)."""
    reverse = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for i in range(n_vocab):
        token = reverse.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        kind = gguf.TokenType.NORMAL
        if i in added:
            if added[i].special:
                kind = gguf.TokenType.CONTROL
            else:
                kind = gguf.TokenType.USER_DEFINED
                if not added[i].normalized and not byte_tokens:
                    token = tokenizer.decode(tokenizer.encode(token, add_special_tokens=False))
                token = token.replace("\u2581", " ")
        elif byte_tokens and re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", token):
            kind = gguf.TokenType.BYTE
        tokens.append(token)
        types.append(kind)
    return tokens, types


def _prepends_space(spec: dict) -> bool:
    """Whether the tokenizer puts '▁' before the text (Llama 2 style), which Gemma's does not."""
    text = json.dumps([spec.get("normalizer"), spec.get("pre_tokenizer")])
    return '"Prepend"' in text or ('"Metaspace"' in text and '"prepend_scheme": "never"' not in text)


def _adds_bos(tokenizer: Any) -> bool:
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id
