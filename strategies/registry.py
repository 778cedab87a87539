"""Config word -> strategy kind. A plain dict, as uvicorn does for protocols."""

from __future__ import annotations

from strategies.automation import AUTOMATION
from strategies.base import StrategyKind
from strategies.bluegreen import BLUEGREEN
from strategies.canary import CANARY
from strategies.shadow import SHADOW
from strategies.split import SPLIT

REGISTRY: dict[str, StrategyKind] = {k.name: k for k in (SPLIT,)}
REGISTRY[CANARY.name] = CANARY
REGISTRY[SHADOW.name] = SHADOW
REGISTRY[AUTOMATION.name] = AUTOMATION
REGISTRY[BLUEGREEN.name] = BLUEGREEN
