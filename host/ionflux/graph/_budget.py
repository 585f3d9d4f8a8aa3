"""One budget for a whole run, its sub-graphs' runs included.

A graph that fans out through sub-graphs (40 nodes, each calling a graph of 40
nodes, each calling one of 40) multiplies work that every per-call limit
allows. ``RunBudget`` counts what the whole tree of runs spends: node calls
(every attempt of a transform, every sub-graph call) and fuel (what each call
used, read from the sandbox's store). The first charge past a limit raises
``RunBudgetExceeded``; from then on every charge raises it too, so no further
node starts anywhere in the tree, and the driver stops the runs.

The root run's budget comes from the configuration (``graph.max_nodes_per_run``,
``graph.max_fuel_per_run``), tightened by the graph's ``budget:``. A sub-graph
that declares a ``budget:`` of its own gets a child budget: its calls count
against both. Lanes charge from worker threads, hence the lock.

Fuel is known only after a call: the call that crosses ``max_fuel`` has run
(within its own ``limits.fuel``) and fails; calls in flight at that moment end
and are counted, nothing new starts.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from .._errors import RunBudgetExceeded
from ._model import Budget


@dataclass(frozen=True, slots=True)
class _Limit:
    value: int
    source: str  # where the value comes from, for the error message


class RunBudget:
    def __init__(
        self, max_nodes: _Limit, max_fuel: _Limit, parent: RunBudget | None = None
    ) -> None:
        self.max_nodes = max_nodes
        self.max_fuel = max_fuel
        self.parent = parent
        self.nodes = 0
        self.fuel = 0
        self._exceeded: tuple[str, int, int, str] | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_run(
        cls,
        max_nodes: int,
        max_fuel: int,
        graph: str,
        declared: Budget,
        parent: RunBudget | None = None,
    ) -> RunBudget:
        """The root run's budget (configuration's limits, tightened by ``declared``), or
        a sub-graph's: its parent's, unless ``declared`` sets limits of its own."""
        if parent is not None and declared.max_nodes is None and declared.max_fuel is None:
            return parent
        nodes = _limit("max_nodes", max_nodes, graph, declared.max_nodes)
        fuel = _limit("max_fuel", max_fuel, graph, declared.max_fuel)
        return cls(nodes, fuel, parent)

    @property
    def exceeded(self) -> RunBudgetExceeded | None:
        """The error of the limit that ran out here or above, if one did."""
        budget: RunBudget | None = self
        while budget is not None:
            if budget._exceeded is not None:
                return RunBudgetExceeded(*budget._exceeded)
            budget = budget.parent
        return None

    def start_node(self) -> None:
        """Counts one node call about to start; raises ``RunBudgetExceeded`` instead
        when the budget (or a parent's) has none left."""
        budget: RunBudget | None = self
        while budget is not None:
            budget._charge(1, 0)
            budget = budget.parent

    def spend_fuel(self, fuel: int) -> None:
        """Counts the fuel a call used; raises ``RunBudgetExceeded`` past the limit."""
        if fuel <= 0:
            return
        budget: RunBudget | None = self
        while budget is not None:
            budget._charge(0, fuel)
            budget = budget.parent

    def _charge(self, nodes: int, fuel: int) -> None:
        with self._lock:
            if self._exceeded is None:
                if nodes and self.nodes + nodes > self.max_nodes.value:
                    limit = self.max_nodes
                    self._exceeded = ("max_nodes", limit.value, self.nodes, limit.source)
                else:
                    self.nodes += nodes
                    self.fuel += fuel
                    if self.fuel > self.max_fuel.value:
                        limit = self.max_fuel
                        self._exceeded = ("max_fuel", limit.value, self.fuel, limit.source)
            exceeded = self._exceeded
        if exceeded is not None:
            raise RunBudgetExceeded(*exceeded)


def _limit(name: str, configured: int, graph: str, declared: int | None) -> _Limit:
    if declared is not None and declared < configured:
        return _Limit(declared, f"graph {graph!r} budget.{name}")
    return _Limit(configured, f"graph.{name}_per_run")
