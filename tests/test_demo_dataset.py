"""The generated demo dataset: deterministic, big enough, multi-hop chains that really need a bridge."""

import hashlib
import json
import re
import subprocess
import sys
from collections import Counter

from ragscale.datasets import demo_dataset, load_dataset
from ragscale.rag.metrics import normalize_answer


def _fingerprint(data) -> str:
    payload = [[q.qid, q.question, q.answers, q.hops, q.supporting_titles, q.decomposition]
               for q in data.questions + data.pool]
    payload.append([[d.doc_id, d.title, d.text] for d in data.corpus])
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


def test_sizes_and_hops():
    data = demo_dataset()
    assert len(data.questions) >= 200 and len(data.corpus) >= 1000
    assert set(Counter(q.hops for q in data.questions)) == {1, 2, 3}
    assert min(Counter(q.hops for q in data.questions).values()) >= 50
    assert len(data.pool) >= 200 and set(q.hops for q in data.pool) == {1, 2, 3}
    lengths = sorted(len(d.text.split()) for d in data.corpus)
    # a person who founded or made several things has the longest passage (the back-links)
    assert lengths[0] >= 30 and lengths[-1] <= 100 and 40 <= lengths[len(lengths) // 2] <= 80
    assert len({d.doc_id for d in data.corpus}) == len({d.title for d in data.corpus}) == len(data.corpus)
    assert load_dataset("demo").name == "demo"


def test_identical_across_calls_and_processes():
    here = _fingerprint(demo_dataset())
    assert _fingerprint(demo_dataset()) == here
    # A new interpreter has a different hash() seed; the dataset must not depend on it.
    code = ("import hashlib, json; from ragscale.datasets import demo_dataset; d = demo_dataset(); "
            "p = [[q.qid, q.question, q.answers, q.hops, q.supporting_titles, q.decomposition] for q in d.questions + d.pool]; "
            "p.append([[x.doc_id, x.title, x.text] for x in d.corpus]); "
            "print(hashlib.sha256(json.dumps(p).encode()).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == here
    assert _fingerprint(demo_dataset(seed=1)) != here


def test_answers_are_extractive_from_supporting_passages():
    data = demo_dataset()
    by_title = {d.title: d.text for d in data.corpus}
    for q in data.questions + data.pool:
        assert len(q.supporting_titles) == q.hops
        # The final answer is stated in the last supporting passage.
        assert normalize_answer(q.answers[0]) in normalize_answer(by_title[q.supporting_titles[-1]]), q
        if q.hops == 1:
            continue
        assert len(q.decomposition) == q.hops and q.decomposition[-1][1] == q.answers[0]
        for (sub_question, sub_answer), title in zip(q.decomposition, q.supporting_titles):
            assert title in sub_question or title in sub_question.replace("the ", "", 1)
            assert normalize_answer(sub_answer) in normalize_answer(by_title[title])
        # The bridge entity is not named in the question: the first hop must be retrieved and read.
        assert q.decomposition[0][1] not in q.question


def test_people_name_what_they_founded_or_made_and_nothing_else_points_back():
    """The person a founder/creator hop leads to names that organisation or work in the role the
    question uses ("X, the founder of the Amber Loom Ensemble, ..."), so the question itself can
    retrieve the second passage (more documents reach the second hop). No other passage names
    what leads to it: a place or school never lists its people, so a third hop still needs a
    follow-up query."""
    data = demo_dataset()
    by_title = {d.title: d.text for d in data.corpus}
    named, unnamed = 0, 0
    for q in data.questions + data.pool:
        for hop in range(1, q.hops):
            previous, passage = q.supporting_titles[hop - 1], by_title[q.supporting_titles[hop]]
            if hop == 1 and q.decomposition[0][0].startswith("Who "):  # founder / creator hop
                phrase = re.search(rf"the (founder|author|director|singer|painter) of (the )?{re.escape(previous)}",
                                   q.question)
                assert phrase and phrase.group(0) in passage, (q.question, passage)
                named += 1
            elif f"Its capital is {previous}." not in passage:  # a country names its capital: a fact, not a back-link
                assert previous not in passage, (q.question, passage)
                unnamed += 1
    assert named >= 150 and unnamed >= 150


def test_no_question_gives_its_answers_away():
    data = demo_dataset()
    for q in data.questions + data.pool:
        assert q.answers[0] not in q.question
        assert not any(answer in q.question for _, answer in q.decomposition)


def test_test_and_pool_share_no_question_and_no_fact():
    data = demo_dataset()
    assert not {q.question for q in data.questions} & {q.question for q in data.pool}
    assert len({q.question for q in data.questions}) == len(data.questions)
    test_steps = {step for q in data.questions for step in (q.decomposition or [(q.question, q.answers[0])])}
    pool_steps = {step for q in data.pool for step in (q.decomposition or [(q.question, q.answers[0])])}
    assert not test_steps & pool_steps


def test_distractors_look_alike():
    data = demo_dataset()
    surnames = Counter(d.title.split()[-1] for d in data.corpus if " is a" in d.text and "born in" in d.text)
    assert sum(1 for n in surnames.values() if n >= 2) >= 50  # many people share a surname


def test_any_prefix_mixes_hop_counts():
    data = demo_dataset()
    assert [q.hops for q in data.questions[:6]] == [1, 2, 3, 1, 2, 3]
    assert Counter(q.hops for q in data.questions[:50]) == Counter({1: 17, 2: 17, 3: 16})


def test_callers_cannot_corrupt_the_cached_build():
    data = demo_dataset()
    data.questions[0].answers.append("tampered")
    data.corpus.clear()
    fresh = demo_dataset()
    assert "tampered" not in fresh.questions[0].answers and len(fresh.corpus) >= 1000
