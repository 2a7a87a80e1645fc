"""The radix prefix cache: match/insert/evict semantics and invariants under random workloads.

Values are plain lists of (token, position) pairs, so a test can check that a match hands back
exactly the values that were inserted for those tokens.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragscale.engines.radix_cache import RadixCache


def tagged(ids):
    """A value that remembers which token at which position it belongs to."""
    return [(t, i) for i, t in enumerate(ids)]


def joined(values):
    return [x for part in values for x in part]


def test_empty_cache_matches_nothing():
    cache = RadixCache()
    length, node, values = cache.match_prefix([1, 2, 3])
    assert (length, values) == (0, [])
    assert node is cache.root


def test_longest_prefix_at_token_granularity():
    cache = RadixCache()
    assert cache.insert([1, 2, 3, 4], tagged([1, 2, 3, 4])) == 4
    assert cache.insert([1, 2, 5], tagged([1, 2, 5])) == 1  # only the new token is stored
    assert cache.total_tokens() == 5
    length, _, values = cache.match_prefix([1, 2, 3, 9])
    assert length == 3
    assert joined(values) == tagged([1, 2, 3])
    length, _, values = cache.match_prefix([1, 2, 5, 6])
    assert length == 3 and joined(values) == tagged([1, 2, 5])
    assert cache.match_prefix([2, 1])[0] == 0
    cache.check_invariants()


def test_match_inside_an_edge_splits_it_and_keeps_values():
    cache = RadixCache()
    cache.insert([7, 8, 9, 10], tagged([7, 8, 9, 10]))
    length, node, values = cache.match_prefix([7, 8])
    assert length == 2 and node.key == (7, 8) and joined(values) == tagged([7, 8])
    assert joined(cache.match_prefix([7, 8, 9, 10, 11])[2]) == tagged([7, 8, 9, 10])
    assert cache.total_tokens() == 4
    cache.check_invariants()


def test_lru_leaf_is_evicted_first():
    cache = RadixCache()
    cache.insert([1, 2, 3], tagged([1, 2, 3]))
    cache.insert([4, 5, 6], tagged([4, 5, 6]))
    cache.match_prefix([1, 2, 3])  # touch: [4, 5, 6] is now the least recently used
    assert cache.evict(1) == 3
    assert cache.match_prefix([4, 5, 6])[0] == 0
    assert cache.match_prefix([1, 2, 3])[0] == 3
    cache.check_invariants()


def test_pinned_nodes_survive_eviction():
    cache = RadixCache()
    cache.insert([1, 2, 3], tagged([1, 2, 3]))
    cache.insert([1, 2, 4], tagged([1, 2, 4]))
    _, node, _ = cache.match_prefix([1, 2, 3])
    cache.inc_ref(node)
    assert cache.locked_tokens() == 3
    cache.evict(100)
    assert cache.match_prefix([1, 2, 3])[0] == 3  # pinned path kept
    assert cache.match_prefix([1, 2, 4])[0] == 2  # the unpinned sibling leaf went
    cache.dec_ref(node)
    assert cache.locked_tokens() == 0
    cache.evict(100)
    assert cache.total_tokens() == 0
    cache.check_invariants()
    with pytest.raises(RuntimeError):
        cache.dec_ref(node)


def test_budget_is_enforced_on_insert():
    cache = RadixCache(token_budget=5)
    cache.insert([1, 2, 3], tagged([1, 2, 3]))
    cache.insert([4, 5, 6], tagged([4, 5, 6]))
    assert cache.total_tokens() <= 5
    assert cache.match_prefix([4, 5, 6])[0] == 3  # the newest survives
    cache.check_invariants()


def test_disabled_cache_stores_nothing():
    cache = RadixCache(disable=True)
    assert cache.insert([1, 2], tagged([1, 2])) == 0
    assert cache.match_prefix([1, 2])[0] == 0
    assert cache.total_tokens() == 0


def test_pages_match_and_store_whole_pages_only():
    cache = RadixCache(page_size=4)
    assert cache.insert(list(range(10)), tagged(list(range(10)))) == 8  # the partial last page is left out
    assert cache.match_prefix(list(range(10)))[0] == 8
    assert cache.match_prefix(list(range(7)))[0] == 4  # rounded down to a page
    # Sequences sharing 6 tokens share one page; the split falls on the page boundary.
    cache.insert([0, 1, 2, 3, 4, 5, 99, 98], tagged([0, 1, 2, 3, 4, 5, 99, 98]))
    length, node, values = cache.match_prefix([0, 1, 2, 3, 4, 5, 99, 98, 7])
    assert length == 8 and joined(values) == tagged([0, 1, 2, 3, 4, 5, 99, 98])
    assert cache.total_tokens() == 12
    cache.check_invariants()


def test_value_must_cover_the_ids():
    with pytest.raises(ValueError):
        RadixCache().insert([1, 2, 3], [0])


# -- property tests ------------------------------------------------------------------------
token_lists = st.lists(st.integers(0, 3), min_size=1, max_size=12)  # tiny alphabet: many shared prefixes
operations = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), token_lists),
        st.tuples(st.just("match"), token_lists),
        st.tuples(st.just("pin"), token_lists),
        st.tuples(st.just("unpin"), st.integers(0, 10)),
        st.tuples(st.just("evict"), st.integers(0, 20)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(ops=operations, budget=st.one_of(st.none(), st.integers(0, 30)), page=st.sampled_from([1, 1, 2, 3]))
def test_random_workloads_keep_every_invariant(ops, budget, page):
    cache = RadixCache(token_budget=budget, page_size=page)
    reference: list[list[int]] = []  # everything ever inserted
    pinned = []  # (node, ids) currently pinned
    for op, arg in ops:
        if op == "insert":
            cache.insert(arg, tagged(arg))
            reference.append(arg)
        elif op in ("match", "pin"):
            length, node, values = cache.match_prefix(arg)
            # The match is whole pages of a real prefix of something inserted, and values are its tokens'.
            assert length % page == 0
            assert joined(values) == tagged(arg[:length])
            assert any(seq[:length] == arg[:length] for seq in reference) or length == 0
            # SGLang's rule for cached_tokens: match the prompt without its last token.
            capped = cache.match_prefix(arg[:-1])[0]
            assert capped <= len(arg) - 1
            if op == "pin" and length:
                cache.inc_ref(node)
                pinned.append((node, arg[:length]))
        elif op == "unpin" and pinned:
            node, _ = pinned.pop(arg % len(pinned))
            cache.dec_ref(node)
        elif op == "evict":
            before = cache.total_tokens()
            freed = cache.evict(arg)
            assert cache.total_tokens() == before - freed
        cache.check_invariants()
        # Pinned prefixes are never evicted.
        for _, ids in pinned:
            assert cache.match_prefix(ids)[0] == len(ids)
        # Memory stays within the budget (a pin can only hold what was already within it).
        if budget is not None:
            assert cache.total_tokens() <= budget
