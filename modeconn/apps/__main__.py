"""`python -m modeconn.apps <command> ...`: the `modeconn` console script without its launcher."""

from modeconn.apps.cli import main

if __name__ == "__main__":
    main()
