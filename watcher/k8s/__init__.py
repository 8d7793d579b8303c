"""Kubernetes: the API client, this node's pods, pid cgroups, Events and the Node condition.

Every module of ours that loads the Kubernetes library is in this package, and the library
resolves ``~`` when it is imported. A container user with no passwd entry and no ``$HOME``
(``env -i``, a bare chroot) has no home, so that import would raise; such a user gets the
home Docker and Kubernetes give it, ``/``, before any module here runs.
"""

import os
from pathlib import Path

try:
    Path.home()
except (RuntimeError, KeyError):
    os.environ["HOME"] = "/"
