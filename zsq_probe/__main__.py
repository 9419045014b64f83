from zsq_probe.cli import main

raise SystemExit(main())
