"""Package policy: names, specs, the decision engine and the filtering package index."""

from __future__ import annotations
