"""``python -m entromix.cli``: the ``entromix`` command."""

from entromix.cli.main import main

main()
