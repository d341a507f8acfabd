"""Makes the link test kit (tests/link/link_harness.py and friends) importable for this folder's tests."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "link"))
