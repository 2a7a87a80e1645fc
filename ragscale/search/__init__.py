"""Step-wise tree search with KV accounting: ETS, REBASE, beam search, DVTS and best-of-N.

The model-free core lives here: the tree (``tree``), one config dataclass and YAML recipes
(``config``), the selection policies (``policies``, one file each), semantic clustering
(``clustering``) and exact retained-KV accounting (``kv``).
"""

from ragscale.search.config import POLICY_NAMES, SearchConfig, load_recipe, recipe_names
from ragscale.search.kv import KVTracker, retained_kv_tokens, retained_nodes
from ragscale.search.policies import POLICIES, apply_allocation, get_policy, remaining_width, weighted_vote
from ragscale.search.tree import Node, Tree

__all__ = [
    "POLICIES",
    "POLICY_NAMES",
    "KVTracker",
    "Node",
    "SearchConfig",
    "Tree",
    "apply_allocation",
    "get_policy",
    "load_recipe",
    "recipe_names",
    "remaining_width",
    "retained_kv_tokens",
    "retained_nodes",
    "weighted_vote",
]
