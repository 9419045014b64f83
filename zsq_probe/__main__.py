"""`python -m zsq_probe ...`: the `zsq-probe` command line."""

from zsq_probe.cli import main

raise SystemExit(main())
