import sys

from lookalike.server.app import main

sys.exit(main())
