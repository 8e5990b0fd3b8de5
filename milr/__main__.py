"""`python -m milr` runs the CLI."""

from milr.cli.main import main

if __name__ == "__main__":
    main()
