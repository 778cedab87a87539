"""Model protocols: how a route reads its requests and answers as items.

A route's `protocol:` word picks one module (router/core/protocols/base.py draws the
seam): `json` (the default: JSON paths, `[*]` for items), `v2` (the Open
Inference Protocol), `tfserving` (TF Serving REST) and `openai` (OpenAI-compatible
LLM servers, streamed or not). Like the strategies'
registry this is a plain dict from the config word to the protocol.
"""

from __future__ import annotations

from typing import Final

from router.core.protocols.base import Items, ModelProtocol
from router.core.protocols.jsonpaths import JSON
from router.core.protocols.openai import OPENAI
from router.core.protocols.tfserving import TFSERVING
from router.core.protocols.v2 import V2

__all__ = ["DEFAULT", "PROTOCOLS", "Items", "ModelProtocol", "get"]

DEFAULT: Final = "json"
PROTOCOLS: Final[dict[str, ModelProtocol]] = {
    "json": JSON,
    "v2": V2,
    "tfserving": TFSERVING,
    "openai": OPENAI,
}


def get(word: str) -> ModelProtocol:
    """The protocol a route names (config validation refuses unknown words)."""
    return PROTOCOLS.get(word, JSON)
