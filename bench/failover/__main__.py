"""`python -m bench.failover`: see bench/failover/run.py."""

import sys

from bench.failover.run import main

sys.exit(main())
