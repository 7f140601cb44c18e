"""``python -m handS3C``: the ``hands3c`` command line (works under ``torchrun -m handS3C``)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
