"""The small-numbers rule: a figure is shown only when the cases it rests on reach a minimum count.

Sensitivity rests on the positives, specificity on the negatives; AUROC, PPV, NPV and a chosen
threshold rest on both. Below the minimum the figure is None and its note says "n too small", in the
HTML report and on the console alike.
"""

from __future__ import annotations

from dataclasses import dataclass

TOO_SMALL = "n too small"


@dataclass(frozen=True)
class MinimumCounts:
    positives: int = 10
    negatives: int = 10

    def both(self, n_positive: int, n_negative: int) -> bool:
        """Enough cases on both sides (AUROC, PPV, NPV, thresholds)."""
        return n_positive >= self.positives and n_negative >= self.negatives

    def note(self, n_positive: int, n_negative: int) -> str | None:
        """None when both sides reach the minimum, else the "n too small" note with the counts."""
        if self.both(n_positive, n_negative):
            return None
        return (f"{TOO_SMALL}: {n_positive} positive, {n_negative} negative "
                f"(minimum {self.positives} and {self.negatives})")

    def operating_point(self, point: dict | None, n_positive: int, n_negative: int) -> dict | None:
        """An operating point (sensitivity, specificity, PPV, NPV) with the figures below the minimum blanked."""
        if point is None:
            return None
        shown = dict(point)
        if n_positive < self.positives:
            shown["sensitivity"] = None
        if n_negative < self.negatives:
            shown["specificity"] = None
        if not self.both(n_positive, n_negative):
            shown["ppv"] = shown["npv"] = None
        return shown

    def as_dict(self) -> dict:
        return {"positives": self.positives, "negatives": self.negatives}
