"""The search tree: one node per reasoning step, shared by every policy.

A tiny data structure in the spirit of SGLang's ``radix_cache.py``: nodes live in a list and
their id is their index, so ids are stable, dense and cheap to serialise. The root holds the
prompt's tokens; every other node holds the tokens of one step. A node's prefix (what the
engine is sent to continue it) is the concatenation of the token ids on its path.

Node status, as the search moves on:
- ``active``   generated in the latest step, waiting for the policy's selection;
- ``kept``     selected: it received children (or is the root);
- ``pruned``   not selected: it received no children and its KV can be dropped;
- ``finished`` it states a final answer (or hit a cap); it uses one unit of width.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

STATUSES = ("active", "kept", "pruned", "finished")


@dataclass
class Node:
    id: int
    parent: int | None  # None for the root
    depth: int
    text: str  # this step's text (the prompt text for the root)
    token_ids: list[int]  # this step's tokens (the prompt's tokens for the root)
    score: float | None = None  # verifier score of this node's last step; None for the root
    finished: bool = False
    answer: str | None = None
    status: str = "active"
    cluster: int | None = None  # semantic cluster among its step's candidates (ETS)
    cached_tokens: int | None = None  # prefix-cache hit the engine reported for this step
    meta: dict[str, Any] = field(default_factory=dict)  # sub-query, doc ids, ... (JSON values)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


class Tree:
    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self._children: list[list[int]] = []

    # ------------------------------------------------------------------ building
    def add_root(self, token_ids: list[int], text: str = "", meta: dict | None = None) -> Node:
        if self.nodes:
            raise ValueError("the tree already has a root")
        return self._add(Node(0, None, 0, text, list(token_ids), status="kept", meta=dict(meta or {})))

    def add_child(
        self,
        parent: int,
        text: str,
        token_ids: list[int],
        score: float | None = None,
        finished: bool = False,
        answer: str | None = None,
        cached_tokens: int | None = None,
        meta: dict | None = None,
    ) -> Node:
        parent_node = self[parent]
        if parent_node.finished:
            raise ValueError(f"node {parent} is finished and cannot get children")
        node = Node(
            id=len(self.nodes),
            parent=parent,
            depth=parent_node.depth + 1,
            text=text,
            token_ids=list(token_ids),
            score=None if score is None else float(score),
            finished=finished,
            answer=answer,
            status="finished" if finished else "active",
            cached_tokens=cached_tokens,
            meta=dict(meta or {}),
        )
        return self._add(node)

    def _add(self, node: Node) -> Node:
        self.nodes.append(node)
        self._children.append([])
        if node.parent is not None:
            self._children[node.parent].append(node.id)
        return node

    def set_status(self, node_id: int, status: str) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; expected one of {STATUSES}")
        self[node_id].status = status

    # ------------------------------------------------------------------ queries
    def __getitem__(self, node_id: int) -> Node:
        if not isinstance(node_id, int) or not 0 <= node_id < len(self.nodes):
            raise KeyError(f"no node {node_id!r} in a tree of {len(self.nodes)} nodes")
        return self.nodes[node_id]

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tree) and self.nodes == other.nodes

    @property
    def root(self) -> Node:
        return self[0]

    def children(self, node_id: int) -> list[Node]:
        self[node_id]
        return [self.nodes[i] for i in self._children[node_id]]

    def path(self, node_id: int) -> list[Node]:
        """Nodes from the root down to ``node_id``, both included."""
        out = []
        node: Node | None = self[node_id]
        while node is not None:
            out.append(node)
            node = None if node.parent is None else self.nodes[node.parent]
        return out[::-1]

    def ancestors(self, node_id: int) -> list[int]:
        """Ids of the strict ancestors of ``node_id``, root first."""
        return [n.id for n in self.path(node_id)[:-1]]

    def prefix_token_ids(self, node_id: int) -> list[int]:
        """The tokens the engine is sent to continue ``node_id``: prompt + every step on its path."""
        return [t for n in self.path(node_id) for t in n.token_ids]

    def prefix_token_count(self, node_id: int) -> int:
        """Length of ``prefix_token_ids(node_id)`` (the node's own tokens included)."""
        return sum(n.num_tokens for n in self.path(node_id))

    def leaves(self) -> list[Node]:
        return [n for n in self.nodes if not self._children[n.id]]

    def frontier(self) -> list[Node]:
        """Nodes waiting for selection: generated in the last step, unfinished."""
        return [n for n in self.nodes if n.status == "active"]

    def finished_leaves(self) -> list[Node]:
        return [n for n in self.nodes if n.finished]

    @property
    def max_depth(self) -> int:
        return max((n.depth for n in self.nodes), default=0)

    # ------------------------------------------------------------------ (de)serialising
    def to_dict(self) -> dict:
        return {"nodes": [asdict(n) for n in self.nodes]}

    @classmethod
    def from_dict(cls, data: dict) -> "Tree":
        tree = cls()
        for i, raw in enumerate(data["nodes"]):
            node = Node(**raw)
            if node.id != i:
                raise ValueError(f"node ids must be 0..n-1 in order; position {i} holds id {node.id}")
            if (node.parent is None) != (i == 0) or (node.parent is not None and not 0 <= node.parent < i):
                raise ValueError(f"node {i} has an invalid parent {node.parent!r}")
            if node.status not in STATUSES:
                raise ValueError(f"node {i} has unknown status {node.status!r}")
            tree._add(node)
        return tree

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "Tree":
        return cls.from_dict(json.loads(text))

    def to_frame(self):
        """Nodes as a pandas DataFrame (one row per node), for tables and plots."""
        import pandas as pd

        rows = []
        prefix: list[int] = []
        for n in self.nodes:  # parents come before children, so prefixes build up in one pass
            prefix.append(n.num_tokens + (prefix[n.parent] if n.parent is not None else 0))
            rows.append(
                {
                    "id": n.id,
                    "parent": n.parent,
                    "depth": n.depth,
                    "tokens": n.num_tokens,
                    "prefix_tokens": prefix[-1],
                    "text": n.text,
                    "score": n.score,
                    "status": n.status,
                    "finished": n.finished,
                    "answer": n.answer,
                    "cluster": n.cluster,
                    "cached_tokens": n.cached_tokens,
                    "n_children": len(self._children[n.id]),
                }
            )
        columns = ["id", "parent", "depth", "tokens", "prefix_tokens", "text", "score", "status",
                   "finished", "answer", "cluster", "cached_tokens", "n_children"]
        frame = pd.DataFrame(rows, columns=columns)
        frame["parent"] = frame["parent"].astype("Int64")
        frame["cluster"] = frame["cluster"].astype("Int64")
        frame["cached_tokens"] = frame["cached_tokens"].astype("Int64")
        return frame
