"""How long the stand-in model takes to answer a call: nothing, a fixed time, or a draw.

A hosted model takes 0.5–3 s per call, and a turn makes two or three; a stand-in that answers at
once hides what that costs a worker. Tests and benchmarks give the stand-in a latency in one of
these forms (seconds):

- `0` or `0.5`: every call takes that long;
- `uniform:0.5,1.5`: drawn evenly between the two bounds;
- `lognormal:1.0,0.3`: drawn around a median of 1.0 s with a log-space spread of 0.3, the long
  right tail hosted models show.

Each call sleeps on its own thread, so concurrent calls overlap as they do against a real server.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

Shape = Literal["fixed", "uniform", "lognormal"]


class LatencyError(ValueError):
    """A latency that cannot be read; the message says what the forms are."""


_FORMS = "use seconds (0.5), uniform:LOW,HIGH or lognormal:MEDIAN,SIGMA"


@dataclass(frozen=True)
class Latency:
    """A model call's delay: `fixed` at `a`, `uniform` on [a, b], or `lognormal` (median a, σ b)."""

    shape: Shape = "fixed"
    a: float = 0.0
    b: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Latency:
        """Read a latency from its text form, or raise `LatencyError`."""
        shape, _, numbers = text.strip().partition(":")
        if not numbers:
            return cls("fixed", _seconds(shape, text))
        parts = numbers.split(",")
        if shape not in ("uniform", "lognormal") or len(parts) != 2:
            raise LatencyError(f"latency {text!r}: {_FORMS}")
        a, b = (_seconds(part, text) for part in parts)
        if shape == "uniform" and a > b:
            raise LatencyError(f"latency {text!r}: the low bound is above the high one")
        if shape == "lognormal" and a == 0:
            raise LatencyError(f"latency {text!r}: the median must be above 0")
        return cls(shape, a, b)  # type: ignore[arg-type]

    def draw(self, rng: random.Random | None = None) -> float:
        """Seconds this call takes."""
        rng = rng or random
        if self.shape == "uniform":
            return rng.uniform(self.a, self.b)
        if self.shape == "lognormal":
            return rng.lognormvariate(math.log(self.a), self.b)
        return self.a


def _seconds(text: str, whole: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise LatencyError(f"latency {whole!r}: {_FORMS}") from None
    if not math.isfinite(value) or value < 0 or value > 600:
        raise LatencyError(f"latency {whole!r}: seconds must be between 0 and 600")
    return value
