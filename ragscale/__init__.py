"""ragscale: a lab for the compute/accuracy trade-off of inference-time scaling.

Two results define the field and the package's layout:
- DRAG / IterDRAG and the computation allocation model (Yue et al. 2025) -> ``ragscale.allocation``,
  ``ragscale.rag``;
- ETS tree search and its KV-cache accounting (Hooper et al. 2025) -> ``ragscale.search``.
Both run on one ``Engine`` interface (``ragscale.engines``): an embedded CPU engine with a radix
prefix cache, or an SGLang server. Nothing in this package imports Streamlit.
"""

from ragscale import config as _config  # noqa: F401  (sets offline environment defaults first)

__version__ = "0.1.0"
