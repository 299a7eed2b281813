"""VitalWatch core: readings, Redis streams, alert engine, sessions, archive, config, CLI."""
