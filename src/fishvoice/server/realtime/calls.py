"""A reply's function calls as the realtime API shows them: each a `function_call` item (an output of the
response beside its message, if it has words), its arguments streamed as `response.function_call_arguments.delta`, then
`.done` with the whole call and the item completed."""

from __future__ import annotations

from typing import Any

from ...contract import ToolCallDelta
from .protocol import function_call_item, new_id
from .reply import Reply


def call_events(reply: Reply, delta: ToolCallDelta) -> list[dict[str, Any]]:
    """The events of a piece of a call: its item announced with the first piece, its arguments as they come."""
    events: list[dict[str, Any]] = []
    if delta.add_to(reply.calls, lambda: new_id("call")):
        reply.call_items[delta.index] = item_id = new_id("item")
        previous = reply.outputs[-1] if reply.outputs else reply.previous_item
        reply.outputs.append(item_id)
        item = function_call_item(item_id, reply.calls[delta.index], "in_progress")
        added = {"response_id": reply.summary.response_id, "output_index": _output_index(reply, delta.index)}
        events.append({"type": "response.output_item.added", **added, "item": item})
        if not reply.out_of_band:
            events.append({"type": "conversation.item.added", "previous_item_id": previous, "item": item})
    if delta.arguments:
        at = _at(reply, delta.index)
        events.append({"type": "response.function_call_arguments.delta", **at, "delta": delta.arguments})
    return events


def calls_done(reply: Reply) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The reply's calls complete: their items, and the events that end each."""
    items, events = [], []
    for index, call in reply.calls.items():
        item = function_call_item(reply.call_items[index], call, "completed")
        at = _at(reply, index)
        function = call["function"]
        done = {"name": function["name"], "arguments": function["arguments"]}
        events.append({"type": "response.function_call_arguments.done", **at, **done})
        at.pop("call_id")
        events.append({"type": "response.output_item.done", **at, "item": item})
        items.append(item)
    return items, events


def _output_index(reply: Reply, index: int) -> int:
    return reply.outputs.index(reply.call_items[index])


def _at(reply: Reply, index: int) -> dict[str, Any]:
    """Where a call's events point: its response, item, output index and call id."""
    return {
        "response_id": reply.summary.response_id,
        "item_id": reply.call_items[index],
        "output_index": _output_index(reply, index),
        "call_id": reply.calls[index]["id"],
    }
