"""Tree search end to end on the ScriptedEngine: tasks, runner, KV statistics, tree output."""

from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import pytest

from ragscale.datasets.types import Document, Question
from ragscale.search.config import POLICY_NAMES, SearchConfig
from ragscale.search.kv import retained_kv_tokens
from ragscale.search.runner import run_search
from ragscale.datasets import load_gsm8k
from ragscale.search.tasks import QATask, ReasoningTask, extract_number, step_ids
from ragscale.search.tree import Tree
from ragscale.search.verifiers import LMJudge, RetrievalGrounding
from tests.fakes import ScriptedEngine

DOCS = [
    Document("d1", "Paris", "Paris is the capital of France."),
    Document("d2", "France", "France is a country in Europe whose capital is Paris."),
    Document("d3", "Eiffel Tower", "The Eiffel Tower is in Paris and was built by Gustave Eiffel."),
    Document("d4", "Berlin", "Berlin is the capital of Germany."),
    Document("d5", "Gustave Eiffel", "Gustave Eiffel was a French civil engineer born in Dijon."),
]
QUESTION = Question("q1", "In which city was the builder of the Eiffel Tower born?", ["Dijon"])


def fake_embed(texts):
    """Bag of hashed words, L2-normalised: similar texts get similar vectors, deterministically."""
    out = np.zeros((len(texts), 64))
    for row, text in enumerate(texts):
        for word in str(text).lower().split():
            out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % 64] += 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms == 0, 1, norms)


def retrieve(query: str, k: int):
    words = set(query.lower().split())
    ranked = sorted(DOCS, key=lambda d: -len(words & set(d.text.lower().split())))
    return ranked[:k]


SUBQUERIES = ["Who built the Eiffel Tower?", "Where was Gustave Eiffel born?", "What is the capital of France?"]


def last_step(prompt: str) -> str:
    return prompt.rsplit("Follow up:", 1)[-1]


def qa_reply(prompt: str, params, i: int, rng: random.Random) -> str:
    if prompt.endswith("So the final answer is:"):
        return " Dijon\n" if "Gustave Eiffel born" in prompt else " Paris\n"
    if prompt.endswith("Intermediate answer:"):
        return " Gustave Eiffel\n" if "Gustave" in prompt.rsplit("Follow up:", 1)[-1] else " Paris\n"
    if prompt.endswith("Follow up:"):
        return f" {SUBQUERIES[rng.randrange(len(SUBQUERIES))]}\n"
    raise AssertionError(f"unexpected prompt end: {prompt[-40:]!r}")


def judge_logprob(prompt: str, continuation: str) -> float:
    # The judge likes a last step that asks about Gustave; "Yes" vs "No" log-probabilities.
    good = "Gustave" in last_step(prompt)
    return (-0.2 if good else -2.0) if continuation == "Yes" else (-2.0 if good else -0.3)


def config(policy: str, width: int = 4, depth: int = 3, **kw) -> SearchConfig:
    return SearchConfig(policy=policy, width=width, max_depth=depth, step_max_tokens=64,
                        sampling_temperature=1.0, seed=kw.pop("seed", 1), **kw)


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_every_policy_completes_within_width(policy):
    engine = ScriptedEngine(qa_reply, logprob=judge_logprob)
    task = QATask(retrieve, k=2)
    width = 4
    seen_frontiers = []
    result = run_search(engine, task, QUESTION, config(policy, width=width), LMJudge(engine), fake_embed,
                        on_step=lambda report: seen_frontiers.append(report.depth))
    tree = result.tree
    assert result.answer in ("Dijon", "Paris")
    assert result.metrics["correct"] == float(result.answer == "Dijon")
    # Width: children at every depth add up to at most the width left; finished leaves never exceed it.
    for depth in range(1, tree.max_depth + 1):
        assert sum(1 for n in tree if n.depth == depth) <= width
    assert len(tree.finished_leaves()) <= width
    assert tree.max_depth <= 3 and seen_frontiers == list(range(len(seen_frontiers)))
    # Forced final answers at the last depth: every branch that survived ends in a leaf.
    assert all(n.finished for n in tree if n.depth == 3)
    # KV statistics agree with the tree.
    assert len(result.kv_per_step) == len(seen_frontiers)
    assert result.kv_peak == max(result.kv_per_step)
    assert result.kv_mean == pytest.approx(sum(result.kv_per_step) / len(result.kv_per_step))
    assert result.kv_per_step[0] == tree.root.num_tokens  # only the prompt is retained before step 1
    kept_now = [n.id for n in tree if n.status == "kept"]
    assert max(result.kv_per_step) <= retained_kv_tokens(tree, kept_now)
    # Engine accounting: one request record per generated sequence, tokens add up.
    assert result.tokens_generated == sum(r["completion_tokens"] for r in result.requests) > 0
    assert result.engine_stats["generated_tokens"] == result.tokens_generated
    assert result.engine_stats["prompt_tokens"] >= result.prompt_tokens
    assert 0 < result.cached_tokens < result.prompt_tokens
    assert result.verifier_calls == len(tree) - 1
    json.dumps(result.to_dict())  # serialisable


def test_kv_steps_match_kept_nodes_recomputed():
    engine = ScriptedEngine(qa_reply, logprob=judge_logprob)
    result = run_search(engine, QATask(retrieve, k=1), QUESTION, config("rebase", width=6), LMJudge(engine), fake_embed)
    tree = result.tree
    # Step 1 keeps the root; later steps keep the parents of the next depth's nodes.
    for step, value in enumerate(result.kv_per_step):
        parents = {n.parent for n in tree if n.depth == step + 1}
        assert value == retained_kv_tokens(tree, parents)


def test_branches_continue_from_token_ids_and_siblings_hit_the_cache():
    engine = ScriptedEngine(qa_reply, logprob=judge_logprob)
    result = run_search(engine, QATask(retrieve, k=1), QUESTION, config("bon", width=3, depth=2),
                        LMJudge(engine), fake_embed)
    tree = result.tree
    for node in tree:
        if node.parent is None:
            continue
        # Every request behind a step started from its parent's exact prefix.
        parent_prefix = tree.prefix_token_count(node.parent)
        for req in node.meta["requests"]:
            assert req["prompt_tokens"] > parent_prefix
    # Depth-2 steps re-use their whole parent path; the scripted engine trims the stop string, so
    # the step's closing newline (added by the task) is the one token it has not seen.
    deep = [n for n in tree if n.depth == 2]
    assert deep and all(n.meta["requests"][0]["cached_tokens"] >= tree.prefix_token_count(n.parent) - 1 for n in deep)
    # The text of the trajectory reads as IterDRAG's self-ask chain.
    leaf = tree.finished_leaves()[0]
    text = engine.decode(tree.prefix_token_ids(leaf.id))
    assert "Follow up:" in text and "Intermediate answer:" in text and "So the final answer is:" in text


def test_sample_frontier_merges_identical_prompts_and_batches_equal_shares():
    from ragscale.engines.base import SamplingParams
    from ragscale.search.tasks import sample_frontier

    engine = ScriptedEngine(lambda prompt, params, i, rng: f"{prompt[-1]}{i}")
    calls = []
    generate = engine.generate
    engine.generate = lambda prompts, params: calls.append((len(prompts), params.n)) or generate(prompts, params)
    a, b, c = engine.encode("A"), engine.encode("B"), engine.encode("C")
    out = sample_frontier(engine, [a, a, b, c], [1, 1, 2, 3], SamplingParams(seed=3))
    # Duplicate branches A, A become one prompt with n=2, so their samples differ (A0, A1).
    assert [[g.text for g in gens] for gens in out] == [["A0"], ["A1"], ["B0", "B1"], ["C0", "C1", "C2"]]
    assert sorted(calls) == [(1, 3), (2, 2)]  # one request per distinct share, not per parent


def test_ets_prunes_duplicates_and_sets_clusters():
    engine = ScriptedEngine(qa_reply, logprob=judge_logprob)
    result = run_search(engine, QATask(retrieve, k=1), QUESTION, config("ets", width=6, lambda_d=1.5),
                        LMJudge(engine), fake_embed)
    clustered = [n for n in result.tree if n.cluster is not None]
    assert clustered, "ETS labels candidates with their semantic cluster"
    assert any(n.status == "pruned" for n in result.tree)


def test_grounding_verifier_scores_steps_against_their_documents():
    engine = ScriptedEngine(qa_reply)
    result = run_search(engine, QATask(retrieve, k=2), QUESTION, config("beam", width=4, depth=2),
                        RetrievalGrounding(fake_embed), fake_embed)
    scores = [n.score for n in result.tree if n.parent is not None]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert result.verifier == "grounding"


def reasoning_reply(prompt: str, params, i: int, rng: random.Random) -> str:
    steps = prompt.split("Problem:")[-1].count("\n\n")
    if prompt.endswith("The final answer is:"):
        return " 12"
    if steps >= 2 and rng.random() < 0.6:
        return "So 3 * 4 = 12.\nThe final answer is: 12\n\n"
    return f"Step with {rng.randrange(3)} apples.\n\nmore text that must be cut"


def test_reasoning_task_steps_and_final_answers(tmp_path):
    path = tmp_path / "gsm.jsonl"
    path.write_text(json.dumps({"question": "3 bags of 4 apples?", "answer": "3*4=12\n#### 12"}) + "\n")
    dataset = load_gsm8k(path)
    q = dataset.questions[0]
    assert q.answers == ["12"]
    engine = ScriptedEngine(reasoning_reply, logprob=lambda p, c: -0.5 if c == "Yes" else -1.0)
    result = run_search(engine, ReasoningTask(), q, config("rebase", width=4, depth=4), LMJudge(engine), fake_embed)
    assert result.answer == "12" and result.correct
    for node in result.tree:
        if node.parent is not None and not node.finished:
            assert node.text and "\n\n" not in node.text
            assert engine.decode(node.token_ids).endswith("\n\n")  # the separator is in the ids


def test_gsm8k_loader_rejects_bad_records(tmp_path):
    from ragscale.errors import DatasetError

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "x", "answer": "no marker"}) + "\n")
    with pytest.raises(DatasetError, match="####"):
        load_gsm8k(bad)


def test_extract_number():
    assert extract_number("so 1,200 + 3\nThe final answer is: 1,203.") == "1203"
    assert extract_number("we get 7 then 9") == "9"
    assert extract_number("we get 7 then 9", strict=True) is None
    assert extract_number("#### 2.50") == "2.5"


def test_step_ids_trims_stop_tokens_the_engine_kept():
    from ragscale.engines.base import Generation, Usage

    engine = ScriptedEngine(qa_reply)
    ids = engine.encode("Paris\nFollow up: more")
    gen = Generation(text="Paris", output_ids=ids, finish_reason="stop", usage=Usage(1, 0, len(ids)))
    assert engine.decode(step_ids(engine, gen, "\n")) == "Paris\n"


def test_tree_json_round_trips_through_result():
    engine = ScriptedEngine(qa_reply, logprob=judge_logprob)
    result = run_search(engine, QATask(retrieve, k=1), QUESTION, config("ets", width=4, depth=2),
                        LMJudge(engine), fake_embed)
    again = Tree.from_dict(json.loads(json.dumps(result.to_dict()))["tree"])
    assert again == result.tree


def test_a_follow_up_that_states_the_answer_is_a_leaf():
    def reply(prompt, params, i, rng):
        if prompt.endswith("Follow up:"):
            return " So the final answer is: Dijon\n" if i == 0 else " Where was Gustave Eiffel born?\n"
        return qa_reply(prompt, params, i, rng)

    engine = ScriptedEngine(reply, logprob=judge_logprob)
    result = run_search(engine, QATask(retrieve, k=1), QUESTION, config("rebase", width=3), LMJudge(engine), fake_embed)
    early = [n for n in result.tree if n.depth == 1 and n.finished]
    assert len(early) == 1 and early[0].answer == "Dijon" and "intermediate" not in early[0].meta
    # Its unit of width is used up: the next depth shares only what is left.
    assert sum(1 for n in result.tree if n.depth == 2) <= 2


def test_demonstrations_come_from_gold_decompositions_and_never_show_the_test_question():
    from ragscale.datasets.types import Dataset
    from ragscale.search.tasks import format_demos

    q2 = Question("q2", "Where was the builder of the tower born?", ["Dijon"],
                  decomposition=[("Who built the tower?", "Eiffel"), ("Where was Eiffel born?", "Dijon")])
    dataset = Dataset("tiny", [QUESTION, q2], list(DOCS))
    demos = format_demos(dataset, m=1)
    assert [d.question for d in demos] == [q2.question] and demos[0].steps == q2.decomposition
    engine = ScriptedEngine(qa_reply)
    task = QATask(retrieve, k=1, demos=demos, num_demos=1)
    _, text, _ = task.root(engine, q2)  # the demonstration *is* this question: left out
    assert "Who built the tower?" not in text
    _, text, _ = task.root(engine, QUESTION)
    assert "Follow up: Who built the tower?\nIntermediate answer: Eiffel" in text


def test_record_has_kv_two_ways_and_the_selection_diagnostics():
    engine = ScriptedEngine(qa_reply, logprob=judge_logprob)
    result = run_search(engine, QATask(retrieve, k=1), QUESTION, config("ets", width=6, lambda_d=1.5),
                        LMJudge(engine), fake_embed)
    kv, prompt = result.summary()["kv"], result.tree.root.num_tokens
    assert kv["prompt"] == prompt and kv["search_per_step"] == [k - prompt for k in result.kv_per_step]
    assert kv["search_mean"] == pytest.approx(result.kv_mean - prompt)
    steps = result.summary()["selections"]
    assert len(steps) == len(result.kv_per_step) and steps[0] == {"candidates": 1, "clusters": None, "kept": 1,
                                                                  "funded_pruned": 0}
    for step, depth in zip(steps, range(len(steps))):
        candidates = [n for n in result.tree if n.depth == depth and not n.finished]
        assert step["candidates"] == len(candidates)
        assert step["kept"] == sum(1 for n in candidates if n.status == "kept")
        if step["candidates"] > 1:  # ETS clustered them: K of N recorded
            assert step["clusters"] == len({n.cluster for n in candidates})
