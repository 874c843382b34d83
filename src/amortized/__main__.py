"""``python -m amortized``."""

import sys

from amortized.cli import main

if __name__ == "__main__":
    sys.exit(main())
