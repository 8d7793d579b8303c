"""``python -m cli`` runs the xidwatch command (as the console script does)."""

from cli.main import main

main()
