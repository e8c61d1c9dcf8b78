"""Allow ``python -m kvmprep``."""

import sys

from kvmprep.cli import main

if __name__ == "__main__":
    sys.exit(main())
