"""Retry policy for steps: pure code, no I/O."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["NonRetryable", "Retry"]


class NonRetryable(Exception):
    """Raise it from a step to stop retrying at once; the workflow sees this exception."""


@dataclass(frozen=True, slots=True)
class Retry:
    """How a step retries: up to ``max_attempts`` runs in all, waiting ``interval`` seconds after
    the first failure, then ``backoff`` times longer after each further one, at most
    ``max_interval``. Only exceptions of the ``retry_on`` types are retried; others, and
    :class:`NonRetryable`, end the step at once. Only the final outcome is checkpointed.
    """

    max_attempts: int = 3
    interval: float = 1.0
    backoff: float = 2.0
    max_interval: float = 3600.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError(f"Retry(max_attempts=) takes an int, not {self.max_attempts!r}")
        if self.max_attempts < 1:
            raise ValueError(
                f"Retry(max_attempts={self.max_attempts}) must be at least 1 (one run, no"
                " retry); use @step() without retry= for no retries"
            )
        for field_name in ("interval", "backoff", "max_interval"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"Retry({field_name}=) takes a number, not {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"Retry({field_name}={value}) must be a finite number >= 0")
        if self.backoff < 1:
            raise ValueError(f"Retry(backoff={self.backoff}) must be >= 1 (1 = a fixed interval)")
        if not self.retry_on or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in self.retry_on
        ):
            raise TypeError(
                "Retry(retry_on=) takes a non-empty tuple of exception types,"
                f" not {self.retry_on!r}"
            )

    def delay(self, failed_attempts: int) -> float:
        """Seconds to wait after ``failed_attempts`` failures (1, 2, ...) before the next run."""
        return min(self.interval * self.backoff ** (failed_attempts - 1), self.max_interval)
