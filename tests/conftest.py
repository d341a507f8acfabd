"""Shared test set-up: every test runs with its own caches and data, never the user's."""

from __future__ import annotations

import os
import tempfile

# stevedore caches entry-point scans under XDG_CACHE_HOME; a stale cache would hide plugins a test
# installs or uninstalls, so the suite uses a private one.
os.environ.setdefault("XDG_CACHE_HOME", tempfile.mkdtemp(prefix="kubeedge-test-cache-"))
os.environ.setdefault("XDG_DATA_HOME", tempfile.mkdtemp(prefix="kubeedge-test-data-"))
