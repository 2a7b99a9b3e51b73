"""`python -m vidlat` runs the command-line app."""

from vidlat.cli.app import main

if __name__ == "__main__":
    main()
