import sys

from ctxrel.cli import main

sys.exit(main())
