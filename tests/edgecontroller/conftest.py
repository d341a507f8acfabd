"""The control-plane helpers live in tests/apiserver/helpers.py; make ``apiserver.helpers`` importable here."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = str(Path(__file__).resolve().parents[1])
if TESTS not in sys.path:
    sys.path.append(TESTS)
