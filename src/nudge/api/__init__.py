"""HTTP API: thin FastAPI routers over the functions in ``nudge.core`` and friends."""
