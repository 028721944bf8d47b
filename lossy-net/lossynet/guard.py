"""The lab's guard: waits until its owner's pipe closes, then removes the owner's namespaces.

Run as ``python -m lossynet.guard OWNER_PID`` with the pipe on stdin. It ignores SIGINT and
SIGHUP (a Ctrl-C in the terminal reaches the whole foreground group), so it outlives the owner.
"""

from __future__ import annotations

import os
import signal
import sys

from lossynet.netns import our_namespaces, remove_namespaces


def main() -> None:
    owner = int(sys.argv[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    while os.read(0, 4096):
        pass
    remove_namespaces(our_namespaces(owner))


if __name__ == "__main__":
    main()
