"""``python -m pilotage.cli``: the same as the ``pilotage`` command."""

from pilotage.cli.main import main

main()
