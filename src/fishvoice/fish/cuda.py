"""Typed constructors of torch's CUDA streams and events (internal): torch leaves theirs unannotated.

The objects are torch's own; only the signatures the engine calls them with are declared here."""

from __future__ import annotations

from collections.abc import Callable

import torch

new_stream: Callable[[torch.device | None], torch.cuda.Stream] = torch.cuda.Stream
new_event: Callable[[], torch.cuda.Event] = torch.cuda.Event
