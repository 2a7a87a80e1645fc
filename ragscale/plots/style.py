"""What every chart of the Explorer and Tree search pages shares: type size and the PNG button.

Presentation mode (a projector at the back of a room) enlarges chart text the same way on every
figure, tick labels included. Legends sit above the plot; entries keep their natural width and
wrap to a second line when a narrow chart (a phone, a half-width column) has no room for them,
so no entry is ever cut ("REB…"); plotly grows the top margin to fit them.
"""

from __future__ import annotations

import plotly.graph_objects as go

NORMAL, LARGE = 12, 18


def sized(fig: go.Figure, large: bool = False) -> go.Figure:
    """Chart text at screen size, or enlarged for presentation mode (legend on top, wrapping)."""
    size = LARGE if large else NORMAL
    fig.update_layout(font=dict(size=size),
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0, font=dict(size=size - 2),
                                  title=None))
    # Streamlit's theme sizes axis text itself: set it here so presentation mode enlarges it too.
    fig.update_xaxes(tickfont=dict(size=size if large else size - 1), title_font=dict(size=size))
    fig.update_yaxes(tickfont=dict(size=size if large else size - 1), title_font=dict(size=size))
    return fig


def chart_config(filename: str) -> dict:
    """plotly modebar config: no logo, a PNG download at twice the screen resolution."""
    return {"displaylogo": False, "toImageButtonOptions": {"format": "png", "filename": filename, "scale": 2}}
