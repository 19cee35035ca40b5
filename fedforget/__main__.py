import sys

from fedforget.cli import main

sys.exit(main())
