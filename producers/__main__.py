"""`python -m producers` is `leadrelay`."""

from producers.cli import main

main()
