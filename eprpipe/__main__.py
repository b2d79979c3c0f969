"""`python -m eprpipe` (and `torchrun -m eprpipe`) runs the command line."""

import sys

from eprpipe.cli import main

sys.exit(main())
