"""A radix tree over token ids that holds the KV of prefixes (after SGLang's RadixCache).

Each edge carries a run of token ids and the value for exactly those tokens: anything with
``len(value)`` and ``value[a:b]`` (the embedded engine stores per-layer K/V slices; tests use
plain lists). The tree answers one question fast — how much of this prompt is already
computed — and forgets least-recently-used leaves when it holds more tokens than its budget.

    cache = RadixCache(token_budget=32768)
    length, node, values = cache.match_prefix(ids)   # values: one slice per edge, in order
    cache.inc_ref(node)  ...use it...  cache.dec_ref(node)   # pinned nodes are never evicted
    cache.insert(ids, value)                                  # stores only what is new

With ``page_size`` P > 1 the tree works in whole pages, like SGLang's ``--page-size``: matches
are rounded down to a multiple of P, only whole pages are stored, and edges split only at page
boundaries (the embedded engine computes KV page by page, so a page is its unit of reuse).

Memory is counted in tokens (``total_tokens``), the unit the budget is in; a slice of a
value is expected to own its memory (the engine's values are lists of page tensors) so that the
count is honest.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Any, Sequence

_clock = itertools.count()  # a strictly increasing "time" for LRU order (ties impossible)


@dataclass(eq=False)
class TreeNode:
    key: tuple[int, ...] = ()  # the token ids on the edge from the parent
    value: Any = None  # KV for exactly those tokens
    parent: "TreeNode | None" = None
    children: dict[tuple[int, ...], "TreeNode"] = field(default_factory=dict)  # first page -> child
    lock_ref: int = 0
    last_access: int = field(default_factory=lambda: next(_clock))

    def __lt__(self, other: "TreeNode") -> bool:  # for the eviction heap
        return self.last_access < other.last_access


class RadixCache:
    def __init__(self, token_budget: int | None = None, disable: bool = False, page_size: int = 1):
        """``token_budget``: most tokens held after an insert (unless pinned); None = unbounded.

        ``disable=True`` behaves like SGLang's --disable-radix-cache: nothing is stored or matched.
        """
        if token_budget is not None and token_budget < 0:
            raise ValueError("token_budget must be >= 0")
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        self.token_budget = token_budget
        self.disable = disable
        self.page_size = page_size
        self.reset()

    def reset(self) -> None:
        self.root = TreeNode()
        self.root.lock_ref = 1  # the root is never evicted
        self._total = 0
        self._locked = 0  # tokens on edges with lock_ref > 0

    # -- queries ---------------------------------------------------------------------------
    def total_tokens(self) -> int:
        return self._total

    def locked_tokens(self) -> int:
        return self._locked

    def match_prefix(self, ids: Sequence[int]) -> tuple[int, TreeNode, list]:
        """Longest cached prefix of ``ids``: (length, its last node, the edge values in order).

        A match that ends inside an edge splits it, so the returned node covers exactly
        ``length`` tokens and can be pinned with ``inc_ref``.
        """
        node, length, values = self.root, 0, []
        if self.disable:
            return 0, node, values
        page = self.page_size
        ids = tuple(ids[:len(ids) // page * page])
        now = next(_clock)
        node.last_access = now
        while length < len(ids) and ids[length:length + page] in node.children:
            child = node.children[ids[length:length + page]]
            shared = _common_length(child.key, ids[length:]) // page * page
            if shared < len(child.key):
                child = self._split(child, shared)
            child.last_access = now
            values.append(child.value)
            length += shared
            node = child
        return length, node, values

    # -- updates ---------------------------------------------------------------------------
    def insert(self, ids: Sequence[int], value: Any) -> int:
        """Cache ``value`` (covering all of ``ids``); only the part not yet cached is stored
        (and only whole pages: a partial last page is left out).

        Returns how many tokens were added. Evicts LRU leaves afterwards to respect the budget.
        """
        if self.disable or len(ids) == 0:
            return 0
        if len(value) != len(ids):
            raise ValueError(f"value covers {len(value)} tokens, ids has {len(ids)}")
        whole = len(ids) // self.page_size * self.page_size
        length, node, _ = self.match_prefix(ids[:whole])
        added = whole - length
        if added:
            child = TreeNode(key=tuple(ids[length:whole]), value=value[length:whole], parent=node)
            node.children[self._child_key(child.key)] = child
            self._total += added
        if self.token_budget is not None and self._total > self.token_budget:
            self.evict(self._total - self.token_budget)
        return added

    def evict(self, num_tokens: int) -> int:
        """Drop least-recently-used unpinned leaves until ``num_tokens`` are freed (or none is left)."""
        leaves = [n for n in self._nodes() if not n.children and n.lock_ref == 0]
        heapq.heapify(leaves)
        freed = 0
        while freed < num_tokens and leaves:
            leaf = heapq.heappop(leaves)
            parent = leaf.parent
            del parent.children[self._child_key(leaf.key)]
            freed += len(leaf.key)
            self._total -= len(leaf.key)
            if not parent.children and parent.lock_ref == 0:
                heapq.heappush(leaves, parent)
        return freed

    def inc_ref(self, node: TreeNode) -> None:
        """Pin ``node`` and its ancestors (a request is using their KV)."""
        while node is not self.root and node is not None:
            if node.lock_ref == 0:
                self._locked += len(node.key)
            node.lock_ref += 1
            node = node.parent

    def dec_ref(self, node: TreeNode) -> None:
        while node is not self.root and node is not None:
            if node.lock_ref <= 0:
                raise RuntimeError("dec_ref on a node that is not pinned")
            node.lock_ref -= 1
            if node.lock_ref == 0:
                self._locked -= len(node.key)
            node = node.parent

    # -- internals -------------------------------------------------------------------------
    def _split(self, child: TreeNode, at: int) -> TreeNode:
        """Cut ``child``'s edge after ``at`` tokens; returns the new upper node."""
        upper = TreeNode(key=child.key[:at], value=child.value[:at], parent=child.parent,
                         lock_ref=child.lock_ref, last_access=child.last_access)
        upper.children[self._child_key(child.key[at:])] = child
        child.parent.children[self._child_key(child.key)] = upper
        child.parent = upper
        child.key = child.key[at:]
        child.value = child.value[at:]
        return upper

    def _child_key(self, key: tuple[int, ...]) -> tuple[int, ...]:
        return key[:self.page_size]

    def _nodes(self):
        stack = list(self.root.children.values())
        while stack:
            node = stack.pop()
            yield node
            stack.extend(node.children.values())

    def check_invariants(self) -> None:
        """Recount everything from scratch (tests call it after every operation)."""
        total = locked = 0
        for node in self._nodes():
            assert node.key, "empty edge"
            assert len(node.value) == len(node.key), "value and key lengths differ"
            assert len(node.key) % self.page_size == 0, "edge is not whole pages"
            assert node.parent.children[self._child_key(node.key)] is node, "broken parent link"
            assert node.lock_ref >= 0
            assert node.lock_ref >= sum(c.lock_ref for c in node.children.values()), "child pinned, parent not"
            total += len(node.key)
            locked += len(node.key) if node.lock_ref else 0
        assert total == self._total, f"token count {self._total} != {total}"
        assert locked == self._locked, f"locked count {self._locked} != {locked}"


def _common_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
