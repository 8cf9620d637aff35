import sys

from demo.evening import main

sys.exit(main())
