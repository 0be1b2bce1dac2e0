import sys

from lookalike.export.cli import main

sys.exit(main())
