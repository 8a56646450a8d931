import sys

from maxwhisper.cli import main

sys.exit(main())
