import sys

from imagegen.cli import main

sys.exit(main())
