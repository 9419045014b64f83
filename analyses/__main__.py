"""`python -m analyses NAME [--scale paper|tiny] [--out DIR] [--device D] [--data-root DIR] [--seeds N] [--dry-run]`."""

import sys

from analyses._runner import main

if __name__ == "__main__":
    sys.exit(main())
