"""Kept so that ``python -m entromix.prediction.cli`` goes on working; the command is :mod:`entromix.cli`."""

from entromix.cli import main

if __name__ == "__main__":
    main()
