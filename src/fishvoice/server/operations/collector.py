"""/metrics: the metrics measured as work happens (fishvoice/metrics.py), and those read at the scrape: the
queue (one number for the whole fleet where jobs are in Redis), what is in use here, the Fish engine's slots
and totals."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from .watched import Watched

log = logging.getLogger(__name__)

# The Fish engine's totals (engine.stats()), as counters: name, stats key, help.
_FISH_TOTALS = (
    ("fishvoice_fish_steps", "steps", "frame steps run over the batch"),
    ("fishvoice_fish_failed_steps", "failed_steps", "frame steps that failed"),
    ("fishvoice_fish_frames", "frames", "audio frames made (one per request a step)"),
    ("fishvoice_fish_step_seconds", "step_s", "host time in rounds that stepped, prefill excluded"),
    ("fishvoice_fish_prefill_seconds", "prefill_s", "host time prefilling prompts"),
    ("fishvoice_fish_prefill_positions", "prefill_positions", "prompt positions prefilled"),
    ("fishvoice_fish_codec_decodes", "codec_batches", "codec decode calls (a batch of requests' chunks each)"),
    ("fishvoice_fish_codec_chunks", "codec_chunks", "requests' chunks decoded by the codec"),
    ("fishvoice_fish_out_of_memory_failures", "out_of_memory", "requests failed by running out of GPU memory"),
)


async def exposition(watched: Watched) -> bytes:
    """Every metric in Prometheus' text format."""
    measured = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # several processes: their values are in shared files
        measured = CollectorRegistry()
        multiprocess.MultiProcessCollector(measured)  # type: ignore[no-untyped-call]
    now = CollectorRegistry(auto_describe=False)
    now.register(_Families(await _read(watched)))
    return generate_latest(measured) + generate_latest(now)


class _Families:
    def __init__(self, families: list[Metric]):
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


async def _read(watched: Watched) -> list[Metric]:
    families = _in_use(watched)
    up = GaugeMetricFamily("fishvoice_job_store_up", "whether the job store answered this scrape")
    try:
        counts = await watched.job_counts()
    except Exception as exc:  # a store outage is what this scrape should show, not a failed scrape
        log.warning("metrics: the job store did not answer: %s", exc)
        up.add_metric([], 0)
        return [*families, up]
    up.add_metric([], 1)
    depth = GaugeMetricFamily("fishvoice_job_queue_depth", "jobs waiting in the queue (every server's, where shared)")
    depth.add_metric([], counts.get("IN_QUEUE", 0))
    states = GaugeMetricFamily(
        "fishvoice_jobs_by_state", "jobs queued, running, and ended within the TTL", labels=["state"]
    )
    for state, count in counts.items():
        states.add_metric([state], count)
    return [*families, up, depth, states, *_fish(watched.voice)]


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _in_use(watched: Watched) -> list[Metric]:
    report = watched.progress()
    in_use = report["in_use"]
    stalled = GaugeMetricFamily("fishvoice_backend_stalled", "a backend held without progress", labels=["backend"])
    for backend, progress in report["progress"].items():
        stalled.add_metric([backend], float(bool(progress.get("stalled"))))
    return [
        _gauge("fishvoice_jobs_running", "jobs this server runs now", watched.jobs_running()),
        _gauge("fishvoice_job_workers", "jobs this server runs at once, at most", watched.job_workers),
        _gauge("fishvoice_work_in_use", "speech, recognition and chat work running now", in_use["work"]),
        _gauge("fishvoice_stream_threads", "threads serving a blocking backend's stream", in_use["stream_threads"]),
        _gauge("fishvoice_realtime_sessions_open", "realtime sessions open", in_use["realtime_sessions"]),
        _gauge("fishvoice_tts_live_sockets_open", "Fish /v1/tts/live sockets open", in_use["tts_live_sockets"]),
        stalled,
    ]


def _fish(voice: Any) -> list[Metric]:
    """The Fish engine's slots and totals, where the voice is the Fish engine."""
    if not callable(read := getattr(voice, "engine_stats", None)):
        return []
    stats = read()
    families: list[Metric] = [
        _gauge("fishvoice_fish_slots", "requests the engine decodes at once, at most", stats["slots"]),
        _gauge("fishvoice_fish_slots_busy", "slots generating now", stats["running"]),
        _gauge("fishvoice_fish_requests_waiting", "requests queued or being prefilled", stats["waiting"]),
    ]
    for name, key, documentation in _FISH_TOTALS:
        families.append(CounterMetricFamily(name, documentation, value=stats[key]))
    return families
