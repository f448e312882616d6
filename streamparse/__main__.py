"""`python -m streamparse ...` == `streamparse ...`."""

import sys

from streamparse.cli import main

sys.exit(main())
