"""`python -m flows run|watch|serve`: see flows.cli."""

from flows.cli import main

raise SystemExit(main())
