"""Where the checkout's own files are: the project root, Alembic's configuration, ``var/``."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"
# Every cluster, staging, report and tool the project makes for itself (git-ignored).
VAR = PROJECT_ROOT / "var"
