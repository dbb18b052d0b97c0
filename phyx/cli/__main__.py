import sys

from phyx.cli import main

sys.exit(main())
