"""The shared edge-messaging peers live in tests/eventbus/edge_peers.py; make ``tests`` importable."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = str(Path(__file__).resolve().parents[1])
if TESTS not in sys.path:
    sys.path.append(TESTS)
