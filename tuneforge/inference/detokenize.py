"""The text of a growing list of tokens, decoded a few tokens at a time.

Decoding every generated token list from the start at each step costs O(n) per token, O(n^2) per answer.
Here only a short window is decoded: the tokens since the last piece of text that was complete, and the
same window without the newest token; the difference is the new text. Decoding both from the same first
token keeps what tokenizers do at the start of a decode (SentencePiece drops a leading space) out of the
difference. A window ending in half of a multi-byte character (U+FFFD) waits for the next token. This is
the scheme vLLM and TGI use. Tokenization-space clean-up (" ?" -> "?") is off: it would change a window's
text after the fact.
"""

from __future__ import annotations


class TextStream:
    def __init__(self, tokenizer, skip_special_tokens: bool = True):
        self.tokenizer, self.skip = tokenizer, skip_special_tokens
        self.tokens: list[int] = []
        self.text = ""
        self._prefix = 0  # window start
        self._read = 0  # tokens up to here are in `text`

    def add(self, token: int) -> str:
        """Append a token; the text it completes (often empty, e.g. mid-character)."""
        self.tokens.append(token)
        before = self._decode(self.tokens[self._prefix:self._read])
        after = self._decode(self.tokens[self._prefix:])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        new = after[len(before):]
        self.text += new
        self._prefix, self._read = self._read, len(self.tokens)
        return new

    def flush(self) -> str:
        """At the end: whatever is still held back (a dangling partial character decodes as U+FFFD)."""
        if self._read == len(self.tokens):
            return ""
        before = self._decode(self.tokens[self._prefix:self._read])
        after = self._decode(self.tokens[self._prefix:])
        new = after[len(before):]
        self.text += new
        self._read = len(self.tokens)
        return new

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=self.skip, clean_up_tokenization_spaces=False)
