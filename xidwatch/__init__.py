"""The ``xidwatch`` command line: the node daemon, replay, and the SRE's query commands.

The command is ``xidwatch.main`` (``app``, ``main``). This package imports nothing itself:
``python -m xidwatch`` imports it before ``xidwatch.__main__`` can hold SIGTERM
(:mod:`xidwatch.signals`).
"""
