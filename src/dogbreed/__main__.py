"""`python -m dogbreed` (what torchrun launches: `torchrun ... -m dogbreed train`)."""

import sys

from dogbreed.cli import main

sys.exit(main())
