import sys

from wellread.cli import main

sys.exit(main())
