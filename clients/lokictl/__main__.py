import sys

from lokictl.cli import main

sys.exit(main())
