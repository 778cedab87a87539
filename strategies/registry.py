"""Config word -> strategy kind. A plain dict, as uvicorn does for protocols."""

from __future__ import annotations

from strategies.base import StrategyKind
from strategies.split import SPLIT

REGISTRY: dict[str, StrategyKind] = {k.name: k for k in (SPLIT,)}
