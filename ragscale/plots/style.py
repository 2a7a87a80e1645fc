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
    # Equal slices of the width for the legend entries: plotly then never wraps them to a second line.
    entries = {t.legendgroup or t.name for t in fig.data if t.showlegend is not False and t.name}
    fig.update_layout(font=dict(size=size),
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0, font=dict(size=size - 2),
                                  title=None, entrywidthmode="fraction", entrywidth=0.95 / max(len(entries), 1)))
    # Streamlit's theme sizes axis text itself: set it here so presentation mode enlarges it too.
    fig.update_xaxes(tickfont=dict(size=size - 1), title_font=dict(size=size))
    fig.update_yaxes(tickfont=dict(size=size - 1), title_font=dict(size=size))
    return fig


def chart_config(filename: str) -> dict:
    """plotly modebar config: no logo, a PNG download at twice the screen resolution."""
    return {"displaylogo": False, "toImageButtonOptions": {"format": "png", "filename": filename, "scale": 2}}
