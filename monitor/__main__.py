"""`python -m monitor` runs the `vitalwatch` command."""

from monitor.app.cli import main

raise SystemExit(main())
