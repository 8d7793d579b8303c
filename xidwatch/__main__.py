"""``python -m xidwatch`` runs the xidwatch command (as the console script does)."""

from __future__ import annotations

from xidwatch.signals import hold_termination


def run() -> None:
    """The console script: hold SIGTERM first, then import the command and run it."""
    hold_termination()
    from xidwatch.main import main  # the heavy imports come after the signal is held

    main()


if __name__ == "__main__":
    run()
