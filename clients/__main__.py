"""`python -m clients` is the `juki` command."""

from clients.cli import main

main()
