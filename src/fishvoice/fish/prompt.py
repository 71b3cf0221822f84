"""The prompt layout the checkpoints were trained on, as a (1 + num_codebooks, T) matrix.

    <|im_start|>system\n  convert the provided text to speech reference to the following:\n\nText:\n
                          <|speaker:0|>{reference text}  \n\nSpeech:\n  {reference codes}  <|im_end|>\n
    <|im_start|>user\n    {text}  <|im_end|>\n
    <|im_start|>assistant\n<|voice|>

Without a reference the system turn is just "convert the provided text to speech". Each piece is
tokenized on its own, as the reference does (BPE never merges across pieces). Row 0 holds token
ids (semantic token = code of codebook 0 + semantic_begin_id); rows 1.. hold the codes at semantic
positions and zeros elsewhere.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

from .tokenizer import IM_END, IM_START, VOICE_MODALITY, FishTokenizer

_SPEAKER_TAG = re.compile(r"<\|speaker:\d+\|>")


def build_prompt(
    tokenizer: FishTokenizer,
    num_codebooks: int,
    text: str,
    reference_text: str | None = None,
    reference_codes: Tensor | None = None,
) -> Tensor:
    """The prompt for speaking `text`, in the voice of (reference_text, reference_codes) when given."""
    system = system_turn(tokenizer, num_codebooks, reference_text, reference_codes)
    return torch.cat([system, speech_turns(tokenizer, num_codebooks, text)], dim=1)


def system_turn(
    tokenizer: FishTokenizer,
    num_codebooks: int,
    reference_text: str | None = None,
    reference_codes: Tensor | None = None,
) -> Tensor:
    """The prompt's first part, the same for every sentence in one voice (the engine caches its keys and values)."""
    pieces: list[str | Tensor] = [f"{IM_START}system\n"]
    if reference_codes is not None:
        ref = reference_text or ""
        if not _SPEAKER_TAG.search(ref):
            ref = f"<|speaker:0|>{ref}"
        pieces += [
            "convert the provided text to speech reference to the following:\n\nText:\n",
            ref,
            "\n\nSpeech:\n",
            reference_codes,
        ]
    else:
        pieces.append("convert the provided text to speech")
    return _columns(tokenizer, num_codebooks, [*pieces, f"{IM_END}\n"])


def speech_turns(tokenizer: FishTokenizer, num_codebooks: int, text: str) -> Tensor:
    """The prompt's second part: the user turn with `text`, and the assistant turn opened for speech."""
    return _columns(
        tokenizer, num_codebooks, [f"{IM_START}user\n", text, f"{IM_END}\n", f"{IM_START}assistant\n{VOICE_MODALITY}"]
    )


def _columns(tokenizer: FishTokenizer, num_codebooks: int, pieces: list[str | Tensor]) -> Tensor:
    columns = [_piece(tokenizer, num_codebooks, piece) for piece in pieces]
    return torch.cat([c for c in columns if c.shape[1]], dim=1)


def _piece(tokenizer: FishTokenizer, num_codebooks: int, piece: str | Tensor) -> Tensor:
    if isinstance(piece, Tensor):
        codes = piece.to(torch.long)
        if codes.ndim != 2 or codes.shape[0] != num_codebooks:
            raise ValueError(f"reference codes must be ({num_codebooks}, frames); got {tuple(codes.shape)}")
        return torch.cat([codes[:1] + tokenizer.semantic_begin_id, codes])
    ids = torch.tensor(tokenizer.encode(piece), dtype=torch.long)
    return torch.cat([ids[None], torch.zeros(num_codebooks, len(ids), dtype=torch.long)])
