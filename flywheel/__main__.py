"""`python -m flywheel` is the `flywheel` command."""

from flywheel.cli import main

main()
