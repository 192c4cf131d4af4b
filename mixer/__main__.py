"""``python -m mixer``: the ``mixer`` command (worker processes of ``mixer serve`` start this way)."""

from __future__ import annotations

from mixer.cli import main

raise SystemExit(main())
