"""The roles a token grants (a module of its own: the CLI names them without loading JWT)."""

from __future__ import annotations

import enum


class Role(enum.Enum):
    """What a token's holder may do in the pool; one per token."""

    USER = "user"
    PILOT = "pilot"
    ADMIN = "admin"
    FRONTEND = "frontend"
    FACTORY = "factory"
