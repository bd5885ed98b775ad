import sys

from conclave_node.cli import main

sys.exit(main())
