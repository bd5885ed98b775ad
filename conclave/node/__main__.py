import sys

from conclave.node.cli import main

sys.exit(main())
