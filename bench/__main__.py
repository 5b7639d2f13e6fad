"""`python -m bench`: see bench/overhead/main.py and bench/README.md."""

import sys

from bench.overhead.main import main

sys.exit(main())
