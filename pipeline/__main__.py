"""Entry point for `python -m pipeline <stage>`."""

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())
