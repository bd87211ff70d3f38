"""`python -m backend.cli` (the tests and the benchmark start workers this way)."""
import sys

from backend.cli import main

sys.exit(main())
