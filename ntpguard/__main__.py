import sys

from ntpguard.cli import main

sys.exit(main())
