"""What every chart of the Explorer and Tree search pages shares: type size and the PNG button.

Presentation mode (a projector at the back of a room) enlarges chart text the same way on every
figure; legends stay on one line above the plot, where they never overlap an axis title.
"""

from __future__ import annotations

import plotly.graph_objects as go

NORMAL, LARGE = 12, 17


def sized(fig: go.Figure, large: bool = False) -> go.Figure:
    """Chart text at screen size, or enlarged for presentation mode (one legend line on top)."""
    size = LARGE if large else NORMAL
    fig.update_layout(font=dict(size=size),
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0, font=dict(size=size - 1),
                                  title=None))
    return fig


def chart_config(filename: str) -> dict:
    """plotly modebar config: no logo, a PNG download at twice the screen resolution."""
    return {"displaylogo": False, "toImageButtonOptions": {"format": "png", "filename": filename, "scale": 2}}
