"""RunPod's job API: the routes (routes.py), the runner that moves jobs through their states (runner.py)
over a job store (store.py: the protocol; in_process_store.py and redis_store.py)."""

from __future__ import annotations

from ...assistant import Assistant
from ...config import Settings
from ...factory import jobs_at_once
from .in_process_store import InProcessJobStore
from .runner import JobLimits, JobRunner
from .store import JobStore


def build_job_store(settings: Settings, limits: JobLimits) -> JobStore:
    """Jobs in this process (`FISHVOICE_JOBS=memory`), or in the Redis the setting names."""
    if settings.jobs == "memory":
        return InProcessJobStore(ttl_s=limits.ttl_s)
    from .redis_store import RedisJobStore

    return RedisJobStore(settings.jobs, prefix=settings.redis_prefix, ttl_s=limits.ttl_s, timeout_s=limits.timeout_s)


def build_job_runner(assistant: Assistant, settings: Settings) -> JobRunner:
    limits = JobLimits(
        concurrency=jobs_at_once(settings.concurrency, assistant.tts, 2),
        queue_size=settings.queue_size,
        timeout_s=settings.job_timeout,
        ttl_s=settings.job_ttl,
    )
    return JobRunner(assistant, build_job_store(settings, limits), limits, debug=settings.debug)
