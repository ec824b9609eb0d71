"""One palette for every figure (matplotlib ``plots`` and the plotly ``chart``): direction on entries, outcome on
exits and bars, so research and live look alike."""

from __future__ import annotations

COLORS = {
    "long": "#1f77b4",
    "short": "#ff7f0e",
    "win": "#2ca02c",
    "loss": "#d62728",
    "flat": "#7f7f7f",
    "equity": "#1f77b4",
    "drawdown": "#d62728",
    "price": "#444444",
}
