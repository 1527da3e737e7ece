"""Rate-limited warnings for skipped samples.

Sources repeat forever, so a bad record comes round once per epoch: a small source with
a few bad lines would log them again every few steps for the whole run. Per reason and
per process (each grain worker counts its own), the first `FIRST_NAMED` skips are
logged with the sample's name (file and line) and detail; after that only the running
count is logged, at 10, 100, 1000, ... skips. The exact counts are in the pipeline's
metrics (`data/skipped/<reason>`), not in the log.
"""

from __future__ import annotations

import collections
import logging

FIRST_NAMED = 5


def _is_power_of_ten(n: int) -> bool:
  while n % 10 == 0:
    n //= 10
  return n == 1


class SkipLog:
  """Counts skips by reason and decides which ones reach the log."""

  def __init__(self, first_named: int = FIRST_NAMED):
    self.first_named = first_named
    self.counts: collections.Counter = collections.Counter()

  def warn(self, reason: str, msg: str) -> None:
    """Logs `msg` (which names the sample) or a periodic count for `reason`."""
    self.counts[reason] += 1
    n = self.counts[reason]
    if n <= self.first_named:
      tail = (
          f" (the first {self.first_named} '{reason}' skips are named; later ones are counted)"
          if n == self.first_named
          else ""
      )
      logging.warning("skipped %s%s", msg, tail)
    elif _is_power_of_ten(n):
      logging.warning(
          "skipped %d samples for '%s' so far in this process (latest: %s)", n, reason, msg
      )
