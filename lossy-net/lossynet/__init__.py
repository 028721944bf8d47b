"""lossy-net: alf's loss-injection lab in Linux network namespaces (docs/lab.md).

Importable from tests and tools; ``python -m lossynet`` is its command line.
"""

from lossynet.netns import Lab, LabError, namespaces_available

__all__ = ["Lab", "LabError", "namespaces_available"]
