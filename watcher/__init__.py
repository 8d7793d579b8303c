"""The node watcher, by what it watches: ``kernel/`` (kmsg, log files, captures, the XID
parser and catalog), ``nvml/``, ``k8s/``, ``sim/``; at the top the daemon that wires them, its
settings and its Prometheus collector.

Imports ``store`` and nothing above it. Import the module you need: this package imports
nothing itself, so a command pays only for what it uses.
"""
