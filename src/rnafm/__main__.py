"""`python -m rnafm` (used by torchrun)."""
from rnafm.cli.main import main

main()
