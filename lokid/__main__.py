import sys

from lokid.cli import main

sys.exit(main())
