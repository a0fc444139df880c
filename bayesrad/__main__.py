"""``python -m bayesrad``: the same command line as ``bayesrad``."""

from bayesrad.cli import main

raise SystemExit(main())
