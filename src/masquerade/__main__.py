import sys

from masquerade.cli import main

sys.exit(main())
