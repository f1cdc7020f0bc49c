"""`python -m hoopctl.cli`."""

from hoopctl.cli import main

main()
