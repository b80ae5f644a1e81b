"""python -m bench.functions"""

import sys

from bench.functions.run import main

sys.exit(main())
