"""The self-hosted, RunPod-compatible job server: `fishvoice serve`.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""
