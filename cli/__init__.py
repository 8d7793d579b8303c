"""The ``xidwatch`` command line: the node daemon, replay, and the SRE's query commands.

The command is ``cli.main`` (``app``, ``main``); this package imports nothing itself, because
``python -m cli`` imports it before ``cli.__main__`` can hold SIGTERM (:mod:`cli.signals`).
"""
