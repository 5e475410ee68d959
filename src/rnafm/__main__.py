"""`python -m rnafm` (used by torchrun); ranks other than 0 print nothing to standard output."""

import os
import sys
from pathlib import Path

from rnafm.cli.main import main

if os.environ.get("RANK", "0") not in ("", "0"):  # torchrun: only rank 0 reports
    sys.stdout = Path(os.devnull).open("w")  # noqa: SIM115 (kept open until the process ends)
main()
