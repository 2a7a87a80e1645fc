"""Plotly figure builders: pure functions returning go.Figure, shared by pages, tests and docs."""
