"""What operators watch, as Prometheus metrics (prometheus-client): measured where the work happens,
served by the server's /metrics (server/operations/). Names follow Prometheus' conventions: `fishvoice_`,
the unit in the name, labels of low cardinality (a route's template, a backend's name, an outcome).

Values that exist only at the moment of a scrape (the queue, slots busy, sessions open) are not here:
the server reads them when scraped (server/operations/collector.py). With PROMETHEUS_MULTIPROC_DIR set,
prometheus-client keeps these in files that every process of a server shares.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Histogram

from . import tracing

_LATENCY = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 60.0)
_JOB = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
_STORE = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_RATIO = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)
_RATE = (5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)

# Requests and jobs.
HTTP_REQUESTS = Counter("fishvoice_http_requests", "HTTP requests answered", ["route", "method", "code"])
HTTP_SECONDS = Histogram(
    "fishvoice_http_request_duration_seconds", "HTTP requests, until the last byte", ["route", "method"], buckets=_JOB
)
JOBS = Counter("fishvoice_jobs", "jobs ended, by how (COMPLETED, FAILED, CANCELLED, TIMED_OUT)", ["outcome"])
JOB_SECONDS = Histogram("fishvoice_job_duration_seconds", "jobs' running time", ["outcome"], buckets=_JOB)
JOB_WAIT_SECONDS = Histogram("fishvoice_job_queue_wait_seconds", "jobs' time in the queue", buckets=_JOB)

# Speech.
FIRST_AUDIO_SECONDS = Histogram(
    "fishvoice_first_audio_seconds",
    "from a request's start (a job's, a realtime reply's, a live utterance's) to its first audio",
    ["route"],
    buckets=_LATENCY,
)
SPEECH_AUDIO_SECONDS = Counter("fishvoice_speech_audio_seconds", "seconds of speech made", ["voice"])
SPEECH_WORK_SECONDS = Counter("fishvoice_speech_synthesis_seconds", "seconds spent making speech", ["voice"])
SPEECH_RTF = Histogram(
    "fishvoice_speech_realtime_factor", "time to speak a chunk over its duration", ["voice"], buckets=_RATIO
)
ALIGN_SECONDS = Histogram("fishvoice_alignment_seconds", "a chunk's word timings found", buckets=_LATENCY)

# Words and hearing.
LLM_FIRST_TOKEN_SECONDS = Histogram(
    "fishvoice_llm_first_token_seconds", "from the LLM's call to its first words", ["backend"], buckets=_LATENCY
)
LLM_TOKENS = Counter("fishvoice_llm_completion_tokens", "tokens the LLM wrote", ["backend"])
LLM_TOKENS_PER_SECOND = Histogram(
    "fishvoice_llm_tokens_per_second", "the LLM's writing speed after its first token", ["backend"], buckets=_RATE
)
ASR_SECONDS = Histogram("fishvoice_asr_seconds", "speech recognised", ["route"], buckets=_LATENCY)

# Realtime sessions.
REALTIME_TURNS = Counter("fishvoice_realtime_turns", "user turns committed in realtime sessions")
REALTIME_BARGE_INS = Counter("fishvoice_realtime_barge_ins", "replies cut short by the user speaking over them")
VOICE_TO_VOICE_SECONDS = Histogram(
    "fishvoice_realtime_voice_to_voice_seconds",
    "from the end of the user's speech to the reply's first audio sent",
    buckets=_LATENCY,
)

# Stores, wrapped at the edge (server/operations/timed_store.py).
STORE_SECONDS = Histogram(
    "fishvoice_store_operation_duration_seconds",
    "conversation and job store operations",
    ["store", "backend", "operation"],
    buckets=_STORE,
)
STORE_ERRORS = Counter("fishvoice_store_errors", "store operations that failed", ["store", "backend", "operation"])


def route() -> str:
    """The current request's route, for a metric's label."""
    return tracing.current().route or "other"


def since_start() -> float:
    """Seconds since the current request began."""
    return time.perf_counter() - tracing.current().started


def first_audio() -> None:
    FIRST_AUDIO_SECONDS.labels(route()).observe(since_start())


@contextmanager
def hearing() -> Iterator[None]:
    """Speech recognised within the block (timed whether it succeeds or not)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        ASR_SECONDS.labels(route()).observe(time.perf_counter() - started)


def spoke(voice: str, audio_s: float, work_s: float) -> None:
    """A chunk spoken by `voice`: `audio_s` seconds of speech in `work_s` seconds."""
    SPEECH_AUDIO_SECONDS.labels(voice).inc(audio_s)
    SPEECH_WORK_SECONDS.labels(voice).inc(work_s)
    if audio_s > 0:
        SPEECH_RTF.labels(voice).observe(work_s / audio_s)


def llm_wrote(backend: str, first_token_s: float | None, tokens: int, total_s: float) -> None:
    """An LLM's reply: its first words after `first_token_s`, `tokens` tokens in `total_s` seconds."""
    if first_token_s is None:
        return
    LLM_FIRST_TOKEN_SECONDS.labels(backend).observe(first_token_s)
    LLM_TOKENS.labels(backend).inc(tokens)
    if tokens > 1 and total_s > first_token_s:
        LLM_TOKENS_PER_SECOND.labels(backend).observe((tokens - 1) / (total_s - first_token_s))
