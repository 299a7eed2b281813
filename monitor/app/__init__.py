"""The application shell: the `vitalwatch` CLI, `run`'s supervisor, the demo — the only part that knows devices/ and dashboard/."""
