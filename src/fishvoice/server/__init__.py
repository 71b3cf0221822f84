"""The self-hosted, RunPod-compatible job server: `fishvoice serve`."""
