"""DRAG / IterDRAG and the baselines of Yue et al. 2025, run for real on an Engine.

- ``prompts``: the prompt layouts and the self-ask parser;
- ``strategies``: zero-shot / many-shot / RAG / DRAG / IterDRAG with token accounting;
- ``demonstrations``: the demonstration pool and cached IterDRAG chains;
- ``sweep``: resumable grid sweeps into a ``ragscale.store.ResultsStore``, and their analysis;
- ``jobs``: sweeps in background threads for the app; ``metrics``: EM / F1 / Acc.
"""
