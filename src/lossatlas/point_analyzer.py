"""The analyzers that look at one point of a subject: its initialisation or a stored minimum.

The Hessian, its per-layer blocks, sharpness, the jump-and-retrain runs and the merge tree's grid
all start the same way: parameters ``at`` ("minimum" or "theta0") and ``minimum`` (which stored
minimum), declared as ``Point`` declares them, and a ``Point`` request for them (alone, or inside
the sample built around it: the grid and the jump-and-retrain runs override ``requests``). Those
that differentiate the loss at the point (Hessian, per-layer Hessian, sharpness) refuse, before
any work is stored, a point whose loss is not finite (``finite_loss``). ``PointAnalyzer``
declares that once.
"""
from __future__ import annotations

from .analyzer import Analyzer
from .params import same_as
from .samplers.points import Point, finite_loss


class PointAnalyzer(Analyzer):
    """An analyzer of one point (scope "minimum"): subclass it and declare the other parameters."""

    scope = "minimum"

    at: str = same_as(Point, "at")
    minimum: int = same_as(Point, "minimum")

    def point(self) -> Point:
        """The request for the point, for ``requests`` or for a sample built around it (a grid)."""
        return Point(at=self.at, minimum=self.minimum)

    def requests(self, subject) -> dict:
        """The point alone, as ``samples["point"]`` (theta and buffers)."""
        return {"point": self.point()}

    def finite_loss(self, subject, theta, buffers, what: str) -> float:
        """The loss at the point, or a NonFiniteLossError saying that ``what`` (e.g. "the Hessian")
        of a non-finite loss means nothing."""
        return finite_loss(subject, theta, buffers, self.at, self.minimum, what)
