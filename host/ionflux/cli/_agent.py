"""``ionflux agent``: see ``_plan`` (the two groups share one Reactor)."""

from ._plan import agent

__all__ = ["agent"]
