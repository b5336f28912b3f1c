"""dreamfix service: the composition root (settings, SQL, HTTP API, scheduler, hot-swap runtime, CLI)."""
