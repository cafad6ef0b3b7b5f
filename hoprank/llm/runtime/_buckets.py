"""Shape bucketing for logit forwards: pad each forward to one of a few sequence lengths.

On a GPU, a new sequence length costs more than its arithmetic: attention kernels
(cuDNN's above all) plan per shape, so a new query of a new length pays host-side setup
the previous queries already paid for theirs. Padding every forward to the next
*bucket* length makes new queries meet shapes already planned, at the price of the
padding's arithmetic. The padding never changes the logits of the real tokens:

- :func:`~hoprank.llm.runtime.forward.last_token_outputs` (FIRST, setwise, pointwise) pads rows
  on the **right**, without a padding mask: under the causal mask no real token attends
  to a pad after it, so its positions and outputs are unchanged;
- ``TransformersEngine.forward_last_logits`` pads on the **left** with a zero attention
  mask, and position ids follow the mask, so the real tokens keep positions ``0..n-1``.

A length beyond the largest bucket is left as it is (a new shape), and no bucket goes
past the engine's context window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hoprank.errors import ConfigError

__all__ = ["LengthBuckets", "length_buckets"]

_MIN_POW2 = 16


@dataclass(frozen=True)
class LengthBuckets:
    """Sequence lengths to pad forwards to: powers of two (``lengths == ()``) or a sorted list."""

    lengths: tuple[int, ...] = ()

    def length(self, n: int, cap: int) -> int:
        """The padded length of a forward of ``n`` tokens (``n`` itself past the largest
        bucket, and never more than ``max(n, cap)``)."""
        if self.lengths:
            target = next((b for b in self.lengths if b >= n), n)
        else:
            target = max(_MIN_POW2, 1 << max(0, n - 1).bit_length())
        return max(n, min(target, cap))

    def describe(self) -> str | list[int]:
        return list(self.lengths) if self.lengths else "pow2"


def length_buckets(spec: str | Sequence[int] | None) -> LengthBuckets | None:
    """``"pow2"``, positive lengths (a list, or a string such as ``"1024,1536,2048"``), or
    ``None`` (no bucketing) as a :class:`LengthBuckets`; anything else raises
    :class:`~hoprank.errors.ConfigError`."""
    if spec is None:
        return None
    if spec == "pow2":
        return LengthBuckets()
    try:
        items = [x for x in spec.split(",") if x.strip()] if isinstance(spec, str) else list(spec)
        if any(isinstance(b, (bool, float)) for b in items):
            raise ValueError
        lengths = sorted({int(b) for b in items})
    except (TypeError, ValueError):
        lengths = []
    if not lengths or lengths[0] < 1:
        raise ConfigError(f"length_buckets: expected 'pow2', positive integer lengths or None, got {spec!r}")
    return LengthBuckets(tuple(lengths))
