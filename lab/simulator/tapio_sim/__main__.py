"""`python -m tapio_sim ...` (lab/bin/tapio-sim is the launcher)."""
import sys

from tapio_sim.cli import main

sys.exit(main())
