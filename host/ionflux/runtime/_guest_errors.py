"""The errors a call's limits raise, worded once for both ABIs.

Each names the limit, its value, and how to raise it: the config setting
(``limits.*``) or the manifest's ``limits:``, which may go up to
``limits.ceiling_factor`` times the config's value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._errors import DeadlineExceeded, FuelExhausted, MemoryLimitExceeded, OutputTooLarge

if TYPE_CHECKING:
    from ._sandbox import CallLimits


def _how(setting: str) -> str:
    return (
        f"raise limits.{setting}, or `limits: {{{setting}: …}}` in the manifest up to the ceiling"
    )


STACK_OVERFLOW = (
    "exhausted its call stack (deep or endless recursion; the stack is "
    "limits.max_wasm_stack_bytes for components)"
)


def fuel_exhausted(limits: CallLimits) -> FuelExhausted:
    return FuelExhausted(f"ran out of fuel ({limits.fuel} units; {_how('fuel')})")


def deadline_exceeded(limits: CallLimits) -> DeadlineExceeded:
    return DeadlineExceeded(
        f"ran past its {limits.timeout_ms} ms time limit ({_how('timeout_ms')})"
    )


def memory_exceeded(limits: CallLimits, detail: str) -> MemoryLimitExceeded:
    return MemoryLimitExceeded(
        f"needed more memory than its {limits.memory_bytes}-byte limit "
        f"({detail}; {_how('memory_bytes')})"
    )


def output_too_large(size: int, max_output_bytes: int) -> OutputTooLarge:
    return OutputTooLarge(
        f"output is {size} bytes, over the {max_output_bytes}-byte limit "
        f"({_how('max_output_bytes')})"
    )
