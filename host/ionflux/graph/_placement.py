"""Placement: which ready nodes share a worker thread, from what their calls cost.

What each transform's calls take is kept as moving averages of (CPU, I/O wait)
seconds. Calls measured under ``LIGHT_S``, or computing more than they wait,
share threads, each with at least ``GROUP_S`` of work; the averages weigh a
new measure by ``COST_WEIGHT``. No I/O here: the driver measures, this decides.
"""

from __future__ import annotations

import os

from ._context import Head
from ._plan import PlannedNode

LIGHT_S = 0.0005
GROUP_S = 0.002
COST_WEIGHT = 0.3
CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

Costs = dict[str, tuple[float, float]]


def cost_key(planned: PlannedNode) -> str:
    transform = planned.transform
    return transform.cid if transform is not None else planned.target


def measure(costs: Costs, key: str, cpu: float, wait: float) -> None:
    """Folds one call's (CPU, wait) seconds into the moving averages of ``key``."""
    before = costs.get(key)
    if before is not None:
        cpu = before[0] + COST_WEIGHT * (cpu - before[0])
        wait = before[1] + COST_WEIGHT * (wait - before[1])
    costs[key] = (cpu, wait)


def groups(costs: Costs, heads: list[Head]) -> list[list[Head]]:
    """Places the nodes that became ready together on worker threads. A node
    whose calls were measured light (under ``LIGHT_S``) or CPU-bound (more
    CPU time than time waiting in imports) shares threads with the others like it: as
    many threads as there are CPUs, fewer when there is too little work for
    each to be worth its hop (``GROUP_S``), balanced by measured cost. More
    threads than CPUs would only queue on the GIL, and a thread hop costs more
    than a light call. Any other node (waiting on I/O, or never measured) gets
    a thread of its own."""
    if len(heads) < 2:
        return [heads] if heads else []
    packed: list[tuple[float, Head]] = []
    out: list[list[Head]] = []
    for head in heads:
        cost = costs.get(cost_key(head.planned))
        if cost is not None and (cost[0] + cost[1] < LIGHT_S or cost[1] < cost[0]):
            packed.append((cost[0] + cost[1], head))
        else:
            out.append([head])
    if packed:
        work = sum(weight for weight, _ in packed)
        threads = max(1, min(len(packed), CPUS, int(work / GROUP_S)))
        loads = [0.0] * threads
        shares: list[list[Head]] = [[] for _ in range(threads)]
        for weight, head in sorted(packed, key=lambda item: -item[0]):  # costliest first
            least = loads.index(min(loads))
            shares[least].append(head)
            loads[least] += weight
        # The nodes of a share keep their file order.
        order = {id(head): i for i, head in enumerate(heads)}
        out += [sorted(s, key=lambda h: order[id(h)]) for s in shares if s]
    return out
