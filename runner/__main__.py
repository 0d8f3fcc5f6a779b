"""`python -m runner` is `imgrun`."""

from runner.cli import main

main()
