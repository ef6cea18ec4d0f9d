"""``python -m fuzz``: see fuzz/fuzz_session.py and docs/FUZZING.md."""

import sys

from fuzz.fuzz_session import main

sys.exit(main())
