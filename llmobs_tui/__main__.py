import sys

from llmobs_tui.cli import main

sys.exit(main())
