import sys

from scepline.cli import main

sys.exit(main())
