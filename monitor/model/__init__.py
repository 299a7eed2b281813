"""The reading model: Reading and metrics, stream codec, Redis key names, config (pure; no I/O)."""
