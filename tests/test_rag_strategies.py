"""Strategies on the ScriptedEngine: prompt layout, self-ask parsing and forcing, token accounting."""

from __future__ import annotations

import re

import pytest

from ragscale.datasets.types import Dataset, Document, Question
from ragscale.rag import prompts
from ragscale.rag.demonstrations import DemoPool, build_demo_pool, split_questions
from ragscale.rag.strategies import Budget, RunConfig, StrategyRunner, expand_grid, unpack_calls
from tests.fakes import ScriptedEngine


class WordRetriever:
    """Ranks documents by shared lower-case words with the query (deterministic, model-free)."""

    def __init__(self, corpus):
        self.corpus = corpus
        self.queries = []

    def search_batch(self, queries, k):
        self.queries.extend(queries)
        out = []
        for query in queries:
            words = set(re.findall(r"\w+", query.lower()))
            ranked = sorted(self.corpus, key=lambda d: (-len(words & set(re.findall(r"\w+", d.render().lower()))), d.doc_id))
            out.append(ranked[:k])
        return out

    def search(self, query, k):
        return self.search_batch([query], k)[0]


def tiny_dataset(n_test: int = 4) -> Dataset:
    people = ["Ada", "Bo", "Cy", "Di", "Ed", "Flo", "Gus", "Hal"]
    cities = ["Paris", "Oslo", "Lima", "Rome", "Kiev", "Doha", "Bern", "Riga"]
    corpus = [Document(f"d{i}", p, f"{p} was born in {c}.") for i, (p, c) in enumerate(zip(people, cities))]
    corpus += [Document(f"x{i}", f"Filler {i}", f"Nothing about anyone number {i}.") for i in range(6)]
    questions = [Question(f"q{i}", f"Where was {p} born?", [c], hops=1) for i, (p, c) in enumerate(zip(people, cities))]
    return Dataset("tiny", questions[:n_test], corpus, "memory", pool=questions[n_test:])


def answer_from_prompt(prompt: str) -> str:
    """A 'reader' that copies the city of the person asked about when the document is in the prompt."""
    asked = re.findall(r"Where was (\w+) born\?", prompt)[-1]
    found = re.search(rf"{asked} was born in (\w+)\.", prompt)
    return found.group(1) if found else "unknown"


def test_drag_prompt_layout_reverse_rank_and_shared_prefix():
    data = tiny_dataset()
    engine = ScriptedEngine(lambda prompt, params, i, rng: answer_from_prompt(prompt) + "\nextra")
    retriever = WordRetriever(data.corpus)
    tests, pool = split_questions(data, limit=2, pool_size=2)
    runner = StrategyRunner(engine, retriever, DemoPool(pool))
    rows = runner.run(RunConfig("drag", 2, 1, 1), tests)
    assert [r["prediction"] for r in rows] == ["Paris", "Oslo"]
    assert [r["acc"] for r in rows] == [1.0, 1.0]
    first, second = (unpack_calls(r["calls_z"])[0]["prompt"] for r in rows)
    # reverse rank order: the best document (the person's own) is the last one before the question
    test_part = first.split("Where was Ada born?")[0].rsplit("Documents:", 1)[1]
    lines = [line for line in test_part.strip().splitlines() if line.strip()]
    assert lines[-1] == "Question:" and lines[-2] == "Ada was born in Paris."
    assert lines[-3] == "Title: Ada"
    # instruction and demonstration (with its own documents and answer) come before the test question
    demo = pool[0]
    assert first.index(demo.question) < first.index("Where was Ada born?")
    assert f"{demo.answers[0]}" in first
    # the shared prefix (everything up to the test question's user turn) is served from the cache
    shared = first[: first.rindex("<|user|>")]
    assert second.startswith(shared)
    assert rows[1]["cached_tokens"] >= len(shared.encode())


def test_effective_length_is_sum_of_prompt_tokens_over_every_call():
    data = tiny_dataset()

    def reply(prompt, params, i, rng):
        if prompt.endswith(prompts.FOLLOW_UP):
            return "Where was Ada born?\nIntermediate answer: x"
        if prompt.endswith(prompts.INTERMEDIATE):
            return "Paris\nFollow up: and then?"
        return "Paris"

    engine = ScriptedEngine(reply)
    runner = StrategyRunner(engine, WordRetriever(data.corpus))
    rows = runner.run(RunConfig("iterdrag", 1, 0, 2), data.questions[:1])
    row = rows[0]
    calls = unpack_calls(row["calls_z"])
    assert row["calls"] == len(calls) == len(engine.calls) == 5  # 2 per iteration + forced final answer
    assert row["effective_length"] == sum(len(p.encode()) for p in engine.calls)
    assert row["effective_length"] == sum(c["prompt_tokens"] for c in calls)
    assert row["cached_tokens"] + row["uncached_tokens"] == row["effective_length"]
    assert row["cached_tokens"] == sum(c["cached_tokens"] for c in calls) > 0


def test_iterdrag_forces_markers_accumulates_documents_and_forces_final_answer():
    data = tiny_dataset()
    sub_queries = iter(["Who is Bo?", "Where was Cy born?", "never asked"])

    def reply(prompt, params, i, rng):
        if prompt.endswith(prompts.FOLLOW_UP):
            return next(sub_queries) + " Intermediate answer: leaked"
        if prompt.endswith(prompts.INTERMEDIATE):
            return "some step\nFollow up: more"
        assert prompt.endswith(prompts.FINAL)
        return " Lima.\nmore text"

    engine = ScriptedEngine(reply)
    retriever = WordRetriever(data.corpus)
    row = StrategyRunner(engine, retriever).run(RunConfig("iterdrag", 1, 0, 2), data.questions[:1])[0]
    roles = [c["role"] for c in unpack_calls(row["calls_z"])]
    assert roles == ["follow_up", "intermediate", "follow_up", "intermediate", "final"]
    # every generation began right after one of the three markers
    for prompt in engine.calls:
        assert prompt.endswith((prompts.FOLLOW_UP, prompts.INTERMEDIATE, prompts.FINAL))
    assert row["steps"] == [["Who is Bo?", "some step"], ["Where was Cy born?", "some step"]]
    assert row["prediction"] == "Lima"
    assert row["acc"] == 0.0 and row["status"] == "ok"
    # documents accumulate: question's doc, then each sub-query's doc
    assert [d["title"] for d in row["documents"]] == ["Ada", "Bo", "Cy"]
    assert [d["query"] for d in row["documents"]][1:] == ["Who is Bo?", "Where was Cy born?"]
    last_prompt = engine.calls[-1]
    assert "Bo was born in Oslo" in last_prompt and "Cy was born in Lima" in last_prompt


def test_iterdrag_stops_early_when_the_model_gives_the_final_answer():
    data = tiny_dataset()

    def reply(prompt, params, i, rng):
        if prompt.endswith(prompts.FOLLOW_UP):
            return "Where was Ada born?"
        return "Paris\nSo the final answer is: **Paris**."

    engine = ScriptedEngine(reply)
    row = StrategyRunner(engine, WordRetriever(data.corpus)).run(RunConfig("iterdrag", 1, 0, 3), data.questions[:1])[0]
    assert row["calls"] == 2 and row["iterations"] == 1
    assert row["prediction"] == "Paris" and row["em"] == 1.0


def test_over_context_prompt_is_skipped_before_any_call():
    data = tiny_dataset()
    engine = ScriptedEngine(lambda *a: "Paris", context_window=300)
    rows = StrategyRunner(engine, WordRetriever(data.corpus)).run(RunConfig("rag", 5, 0, 1), data.questions[:2])
    assert engine.calls == []
    assert all(r["status"] == "skipped" for r in rows)
    assert "exceeds the context window of 300" in rows[0]["skip_reason"]
    assert rows[0]["em"] is None and rows[0]["effective_length"] == 0


@pytest.mark.parametrize("text, expected", [
    ("Where was Ada born?", "Where was Ada born?"),
    ("  Follow up: Where was Ada born?\nIntermediate answer: Paris", "Where was Ada born?"),
    ("Who founded X? Intermediate answer: Bob", "Who founded X?"),
    ("**Follow-up:** What year?", "What year?"),
    ("", "the question"),
])
def test_parse_follow_up(text, expected):
    assert prompts.parse_follow_up(text, "the question") == expected


@pytest.mark.parametrize("text, answer, final", [
    ("Paris", "Paris", None),
    ("Paris.\nFollow up: x", "Paris", None),
    ("Paris\nSo the final answer is: France.", "Paris", "France"),
    ("the answer is Paris. So the final answer is: Paris", "the answer is Paris", "Paris"),
    ("\nSO THE FINAL ANSWER IS: 1976", "1976", "1976"),
    ("J.R.R. Tolkien", "J.R.R. Tolkien", None),
])
def test_parse_intermediate(text, answer, final):
    assert prompts.parse_intermediate(text) == (answer, final)


@pytest.mark.parametrize("text, expected", [
    (" Answer: \"Lima\".\nmore", "Lima"),
    ("So the final answer is: Oslo", "Oslo"),
    ("\n\nThe answer is: 1871", "1871"),
    ("", ""),
])
def test_clean_answer(text, expected):
    assert prompts.clean_answer(text) == expected


def test_grid_labels_each_configuration_once():
    grid = expand_grid(["rag", "drag", "iterdrag"], [0, 2], [0, 1], [1, 2])
    names = [c.name for c in grid]
    assert len(names) == len(set(names))
    assert "zero-shot k=0 m=0 n=1" in names and "many-shot k=0 m=1 n=1" in names
    assert "rag k=2 m=0 n=1" in names and "drag k=2 m=1 n=1" in names
    assert sum(c.iterative for c in grid) == 8
    with pytest.raises(Exception, match="unknown strategy"):
        expand_grid(["bogus"], [0], [0], [1])


def test_chain_demonstrations_keep_correct_chains_and_fall_back(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGSCALE_CACHE_DIR", str(tmp_path))
    data = tiny_dataset(n_test=5)  # pool: Flo, Gus, Hal

    def reply(prompt, params, i, rng):
        if prompt.endswith(prompts.FOLLOW_UP):
            return re.findall(r"Where was \w+ born\?", prompt)[-1]
        if prompt.endswith(prompts.INTERMEDIATE):
            city = answer_from_prompt(prompt)
            # the model gets Hal wrong
            return ("Nowhere" if "Hal born" in prompt.split("<|user|>")[-1] else city) + "\nSo the final answer is: " + (
                "Nowhere" if "Hal born" in prompt.split("<|user|>")[-1] else city)
        return "x"

    engine = ScriptedEngine(reply)
    # byte tokens: give the intermediate call room for "<city>\nSo the final answer is: <city>"
    runner = StrategyRunner(engine, WordRetriever(data.corpus), budget=Budget(intermediate_tokens=64))
    _, pool = split_questions(data, pool_size=3)
    demo = build_demo_pool(data, pool, runner, chain_k=1, chain_n=2)
    assert demo.sources(3, True) == ["generated", "generated", "one-step"]
    assert "2 of 3 generated chains correct" in demo.chain_note
    calls = len(engine.calls)
    again = build_demo_pool(data, pool, runner, chain_k=1, chain_n=2)  # from the disk cache
    assert len(engine.calls) == calls and again.sources(3, True) == demo.sources(3, True)
    examples = demo.examples(1, 2, True, runner.retrieve)
    assert examples[0].steps and examples[0].answer in ("Doha", "Bern")


def test_empty_or_cut_final_answer_falls_back_to_the_last_intermediate_answer():
    data = tiny_dataset()
    assert prompts.parse_intermediate("Paris\nSo the final answer is:") == ("Paris", "")

    def reply(prompt, params, i, rng):
        if prompt.endswith(prompts.FOLLOW_UP):
            return "Where was Ada born?"
        if prompt.endswith(prompts.INTERMEDIATE):
            return "Paris"
        return "\n"  # the model ends its turn right after "So the final answer is:"

    engine = ScriptedEngine(reply)
    row = StrategyRunner(engine, WordRetriever(data.corpus)).run(RunConfig("iterdrag", 1, 0, 1), data.questions[:1])[0]
    assert row["calls"] == 3 and row["prediction"] == "Paris" and row["em"] == 1.0


def test_demonstrations_are_hop_aware():
    """Each test question gets demonstrations with its own hop count first (then the nearest
    counts, pool order within a count); questions with as many hops share one prompt prefix."""
    data = tiny_dataset(n_test=4)
    hops_of = {"q4": 1, "q5": 2, "q6": 3, "q7": 2}  # pool: Ed 1-hop, Flo 2, Gus 3, Hal 2
    pool = [Question(q.qid, q.question, q.answers, hops=hops_of[q.qid]) for q in data.pool]
    tests = [Question(q.qid, q.question, q.answers, hops=h) for q, h in zip(data.questions, (1, 2, 3, 2))]
    demo = DemoPool(pool)
    assert [q.qid for q in demo._ordered(2, False, hops=2)] == ["q5", "q7"]
    assert [q.qid for q in demo._ordered(2, False, hops=3)] == ["q6", "q5"]
    assert [q.qid for q in demo._ordered(1, False)] == ["q4"]  # no hop count: pool order, as before
    assert demo.sources(1, False, hops=3) == ["gold-answer (3-hop)"]
    engine = ScriptedEngine(lambda prompt, params, i, rng: answer_from_prompt(prompt))
    runner = StrategyRunner(engine, WordRetriever(data.corpus), demo)
    rows = {r["qid"]: r for r in runner.run(RunConfig("drag", 1, 1, 1), tests)}
    demo_question = {qid: unpack_calls(r["calls_z"])[0]["prompt"].split("<|user|>")[1] for qid, r in rows.items()}
    assert "Where was Ed born?" in demo_question["q0"]
    assert "Where was Flo born?" in demo_question["q1"] and "Where was Flo born?" in demo_question["q3"]
    assert "Where was Gus born?" in demo_question["q2"]
    assert rows["q2"]["demo_sources"] == ["gold-answer (3-hop)"]
    assert all(r["acc"] == 1.0 for r in rows.values())
    # m = 0 runs are untouched: one group, no demonstrations
    plain = runner.run(RunConfig("rag", 1, 0, 1), tests)
    assert all(r["demo_sources"] == [] for r in plain)
