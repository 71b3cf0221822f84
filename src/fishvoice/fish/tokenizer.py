"""The checkpoint's tokenizer (tokenizer.json, byte-level BPE) and its special tokens."""

from __future__ import annotations

import re
from pathlib import Path

from tokenizers import Tokenizer

from .errors import CheckpointError

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
VOICE_MODALITY = "<|voice|>"
_SEMANTIC = re.compile(r"^<\|semantic:(\d+)\|>$")


class FishTokenizer:
    """Encodes prompt text (special tokens inline) and knows where the semantic tokens lie."""

    def __init__(self, path: Path):
        file = path / "tokenizer.json"
        if not file.is_file():
            raise CheckpointError(f"{file}: missing; expected the checkpoint's tokenizer")
        try:
            self._tokenizer = Tokenizer.from_file(str(file))
        except Exception as exc:
            raise CheckpointError(f"{file}: not a readable tokenizer ({exc})") from None
        vocab = self._tokenizer.get_vocab(with_added_tokens=True)
        semantic = sorted(
            (int(m.group(1)), token_id) for token, token_id in vocab.items() if (m := _SEMANTIC.match(token))
        )
        if not semantic:
            raise CheckpointError(f"{file}: holds no <|semantic:N|> tokens; expected a Fish Speech tokenizer")
        ids = [token_id for _, token_id in semantic]
        if ids != list(range(ids[0], ids[0] + len(ids))) or [code for code, _ in semantic] != list(range(len(ids))):
            # The engine maps code -> token as an offset, as the reference does; that needs one contiguous run.
            raise CheckpointError(f"{file}: the semantic tokens are not one contiguous run of ids")
        self.semantic_begin_id, self.semantic_end_id = ids[0], ids[-1]
        # All three must be there; the engine itself needs <|im_end|>'s id.
        _, self.im_end_id, _ = (self._special_id(file, token) for token in (IM_START, IM_END, VOICE_MODALITY))

    def _special_id(self, file: Path, token: str) -> int:
        token_id = self._tokenizer.token_to_id(token)
        if token_id is None:
            raise CheckpointError(f"{file}: lacks the special token {token}")
        return token_id

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def token_id(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)
