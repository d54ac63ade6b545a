import sys

from tests.fuzz.mutants.driver import main

sys.exit(main())
