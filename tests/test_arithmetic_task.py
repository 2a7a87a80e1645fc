"""The arithmetic task (generated running-total problems) and its rule-based process verifier."""

from __future__ import annotations

import inspect
import re

import pytest

from ragscale.errors import UserError
from ragscale.search import rule_verifier
from ragscale.search.config import load_recipe
from ragscale.search.rule_verifier import ArithmeticRules, check_steps
from ragscale.search.runner import run_search
from ragscale.search.tasks.arithmetic import (DEFAULT_OPERATIONS, DEMONSTRATIONS, ArithmeticTask, Problem, arithmetic_dataset,
                                              parse_answer, parse_problem)
from ragscale.search.verifiers import Trajectory
from tests.fakes import ScriptedEngine

PROBLEM = "Start with 7. Add 5. Multiply by 3. Subtract 4."  # 7 + 5 = 12, 12 * 3 = 36, 36 - 4 = 32


# --- generator ---------------------------------------------------------------------------------

def test_generator_is_deterministic_by_seed():
    a, b = arithmetic_dataset(20, seed=3), arithmetic_dataset(20, seed=3)
    assert [q.question for q in a.questions] == [q.question for q in b.questions]
    assert [q.answers for q in a.questions] == [q.answers for q in b.questions]
    other = arithmetic_dataset(20, seed=4)
    assert [q.question for q in other.questions] != [q.question for q in a.questions]
    # A prefix of a longer set is the shorter set: --limit N takes the same first N problems.
    assert [q.question for q in arithmetic_dataset(40, seed=3).questions[:20]] == [q.question for q in a.questions]


def test_generated_problems_are_distinct_small_and_answered_right():
    data = arithmetic_dataset(60, seed=0)
    texts = [q.question for q in data.questions]
    assert len(set(texts)) == 60 and not set(texts) & {p for p, _ in DEMONSTRATIONS}
    assert len({q.qid for q in data.questions}) == 60 and data.name == "arithmetic"
    for q in data.questions:
        problem = parse_problem(q.question)
        assert problem.text == q.question and len(problem.operations) == DEFAULT_OPERATIONS
        total = problem.start
        for symbol, operand in problem.operations:  # recomputed here, not with Problem.value
            total = {"+": total + operand, "-": total - operand, "*": total * operand}[symbol]
            assert 1 <= total <= 99
        assert q.answers == [str(total)]


def test_generator_rejects_empty_sets():
    with pytest.raises(UserError):
        arithmetic_dataset(0)
    with pytest.raises(UserError):
        parse_problem("What is the capital of France?")


def test_demonstrations_pass_the_checker():
    for problem, solution in DEMONSTRATIONS:
        assert check_steps(problem, solution.splitlines()) == [True] * len(solution.splitlines())
        assert parse_answer(solution.splitlines()[-1]) == str(parse_problem(problem).value())


# --- the checker, step by step -----------------------------------------------------------------

def test_a_right_chain_passes_every_step():
    steps = ["7 + 5 = 12", "12 * 3 = 36", "36 - 4 = 32", "Answer: 32"]
    assert check_steps(PROBLEM, steps) == [True, True, True, True]
    assert check_steps(PROBLEM, steps[:2]) == [True, True]  # a partial path is judged as it stands


def test_wrong_arithmetic_fails_that_step_and_every_later_one():
    assert check_steps(PROBLEM, ["7 + 5 = 13", "13 * 3 = 39", "39 - 4 = 35", "Answer: 35"]) == [False] * 4
    assert check_steps(PROBLEM, ["7 + 5 = 12", "12 * 3 = 35", "35 - 4 = 31"]) == [True, False, False]


def test_unavailable_numbers_fail():
    # 6 is not in the problem; 5 is used twice; the left side is not the running total.
    assert check_steps(PROBLEM, ["7 + 6 = 13"]) == [False]
    assert check_steps(PROBLEM, ["7 + 5 = 12", "12 + 5 = 17"]) == [True, False]
    assert check_steps(PROBLEM, ["7 + 5 = 12", "7 * 3 = 21"]) == [True, False]
    assert check_steps(PROBLEM, ["8 + 5 = 13"]) == [False]


def test_answer_line_must_be_the_running_total_after_every_operand():
    ok = ["7 + 5 = 12", "12 * 3 = 36", "36 - 4 = 32"]
    assert check_steps(PROBLEM, ok + ["Answer: 31"])[-1] is False
    assert check_steps(PROBLEM, ok[:2] + ["Answer: 36"])[-1] is False  # 4 never used
    assert check_steps(PROBLEM, ok + ["Answer: 32.5"])[-1] is False


def test_prose_and_malformed_lines_fail():
    assert check_steps(PROBLEM, ["First we add five to seven."]) == [False]
    assert check_steps(PROBLEM, ["7 + 5 ="]) == [False]
    assert check_steps(PROBLEM, ["7 x 5 = 35"]) == [True]  # 'x' is read as multiplication


def test_checker_is_not_an_oracle_wrong_operator_passes():
    # Subtract 4 done as + 4: every rule holds (right arithmetic, available numbers), the answer
    # (40) is not the gold (32). The checker never knows the gold, so it cannot tell.
    assert check_steps(PROBLEM, ["7 + 5 = 12", "12 * 3 = 36", "36 + 4 = 40", "Answer: 40"]) == [True] * 4


def _traj(steps, answer=None, question=PROBLEM):
    return Trajectory(question=question, prompt_ids=[], steps=list(steps), answer=answer)


def test_verifier_scores_each_path_so_far():
    rules = ArithmeticRules()
    scores = rules.score([
        _traj(["7 + 5 = 12"]),
        _traj(["7 + 5 = 12", "12 * 3 = 36"]),
        _traj(["7 + 5 = 13"]),
        _traj(["7 + 5 = 13", "13 * 3 = 39"]),  # right arithmetic after a wrong step: still 0
        _traj(["7 + 5 = 12", "12 * 3 = 36", "36 - 4 = 32", "Answer: 32"], answer="32"),
        _traj(["7 + 5 = 12", "12 * 3 = 36", "36 - 4 = 32", "Answer: 30"], answer="30"),
    ])
    assert scores == [1.0, 1.0, 0.0, 0.0, 1.0, 0.0]


def test_verifier_judges_a_reply_that_ended_without_an_answer_line():
    rules = ArithmeticRules()
    done = ["7 + 5 = 12", "12 * 3 = 36", "36 - 4 = 32", ""]
    assert rules.score([_traj(done, answer="32")]) == [1.0]
    assert rules.score([_traj(done[:2] + [""], answer="36")]) == [0.0]  # stopped before using 4


def test_verifier_never_sees_or_computes_the_gold(monkeypatch):
    # The Trajectory it reads carries no gold, and the module never solves the problem: with the
    # solver disabled, scores are unchanged.
    assert "answers" not in {f for f in Trajectory.__dataclass_fields__}
    source = inspect.getsource(rule_verifier)
    # (the word "graded" names the confidence-weighted checker; a call of the task's grade() is what must not be there)
    assert ".value(" not in source and "answers" not in source and not re.search(r"\bgrade\(|\.grade\b", source)

    def boom(self):
        raise AssertionError("the verifier solved the problem")

    monkeypatch.setattr(Problem, "value", boom)
    assert ArithmeticRules().score([_traj(["7 + 5 = 12", "12 * 3 = 36", "36 + 4 = 40", "Answer: 40"],
                                          answer="40")]) == [1.0]


def test_verifier_rejects_other_tasks():
    with pytest.raises(UserError, match="arithmetic"):
        ArithmeticRules().score([_traj(["Paris"], question="Where is the Louvre?")])


# --- the task in a search ----------------------------------------------------------------------

def _reply():
    """A scripted model: half its first lines start a right solution, half a wrong one."""
    right = ["7 + 5 = 12", "12 * 3 = 36", "36 - 4 = 32", "Answer: 32"]
    wrong = ["7 + 5 = 13", "13 * 3 = 39", "39 - 4 = 35", "Answer: 35"]

    def reply(prompt, params, i, rng):
        tail = prompt.rsplit("<|assistant|>\n", 1)[-1]
        # The first line is right for even samples; later lines continue the path's own solution.
        lines = (right if i % 2 == 0 else wrong) if not tail.strip() else (right if tail.startswith(right[0]) else wrong)
        if tail.endswith("Answer:"):
            return " " + lines[-1].split(": ")[1]
        done = len([l for l in tail.split("\n") if l.strip()])
        return lines[min(done, len(lines) - 1)] + "\n"

    return reply


@pytest.mark.parametrize("policy", ["bon", "beam", "dvts", "rebase"])
def test_search_with_the_rules_picks_the_valid_chain(policy):
    task = ArithmeticTask()
    question = arithmetic_dataset(1).questions[0]
    question = type(question)(qid="q", question=PROBLEM, answers=["32"], dataset="arithmetic", hops=3)
    engine = ScriptedEngine(_reply())
    config = load_recipe(policy, width=4, max_depth=task.default_max_depth, step_max_tokens=16, seed=0)
    result = run_search(engine, task, question, config, ArithmeticRules(), None)
    assert result.answer == "32" and result.correct
    finished = [n for n in result.tree if n.status == "finished"]
    assert finished and all(n.answer in ("32", "35") for n in finished)
    assert all((n.score == 1.0) == (n.answer == "32") for n in finished)


def test_task_grades_numbers_and_forces_an_answer_at_max_depth():
    task = ArithmeticTask()
    question = type(arithmetic_dataset(1).questions[0])(qid="q", question=PROBLEM, answers=["32"],
                                                       dataset="arithmetic", hops=3)
    assert task.grade(question, "32.0")["correct"] == 1.0 and task.grade(question, "31")["correct"] == 0.0
    assert task.grade(question, None)["correct"] == 0.0
    engine = ScriptedEngine(_reply())
    config = load_recipe("bon", width=2, max_depth=2, step_max_tokens=16, seed=0)
    result = run_search(engine, task, question, config, ArithmeticRules(), None)
    leaves = [n for n in result.tree if n.status == "finished"]
    assert leaves and all(n.depth == 2 and n.text.startswith("Answer:") for n in leaves)
    assert all(n.score == 0.0 for n in leaves)  # forced after two operations: 4 unused



# --- the bundled sweep: command, report, loader ------------------------------------------------

def _row(policy, width, qid, correct, kv):
    return {"qid": qid, "policy": policy, "width": width, "seed": 0, "correct": correct,
            "kv": {"mean": kv, "per_step": [kv], "prompt": 50},
            "task": "arithmetic", "verifier": "rules", "model": "m", "config": {"max_depth": 4}}


def test_matched_accuracy_ratio_uses_the_cheapest_width_reaching_the_shared_best():
    from ragscale.search.results import matched_accuracy_kv_ratio, tradeoff_table

    rows = []
    for width, kv, right in ((1, 100, 0), (4, 200, 1), (16, 400, 2)):  # REBASE: 0, 1/2, 2/2
        rows += [_row("rebase", width, "a", right >= 1, kv), _row("rebase", width, "b", right >= 2, kv)]
    for width, kv, right in ((1, 100, 0), (4, 150, 1), (16, 250, 1)):  # ETS: 0, 1/2, 1/2
        rows += [_row("ets", width, "a", right >= 1, kv), _row("ets", width, "b", right >= 2, kv)]
    match = matched_accuracy_kv_ratio(tradeoff_table(rows))
    # Shared best is 0.5: REBASE gets there at width 4 (200), ETS at width 4 (150).
    assert match["accuracy"] == 0.5 and match["rebase_width"] == 4 and match["ets_width"] == 4
    assert match["ratio"] == pytest.approx(200 / 150)
    never = [r | {"correct": False} for r in rows]
    assert matched_accuracy_kv_ratio(tradeoff_table(never))["ratio"] is None


@pytest.fixture
def scripted_cli(monkeypatch):
    from ragscale.datasets.types import Dataset, Question
    from ragscale.search import builder as search_builder
    from ragscale.search import cli as search_cli
    from tests.test_search_runner import fake_embed

    question = Question(qid="q", question=PROBLEM, answers=["32"], dataset="arithmetic", hops=3)
    monkeypatch.setattr(search_cli, "engine_from_args", lambda args, **kw: ScriptedEngine(_reply()))
    monkeypatch.setattr(search_builder, "embedder", lambda: fake_embed)
    monkeypatch.setattr(search_builder, "load_questions", lambda task, path: Dataset("arithmetic", [question], [],
                                                                                   source="generated"))


def test_search_sweep_report_and_bundled_loader(scripted_cli, tmp_path, capsys):
    import json

    from ragscale.cli import main
    from ragscale.search.results import load_sweep_records, tradeoff_table

    out, report = tmp_path / "search.sqlite", tmp_path / "search.md"
    args = ["search-sweep", "--task", "arithmetic", "--verifier", "rules", "--dataset", "arithmetic",
            "--policies", "bon,rebase,ets", "--widths", "1,4", "--limit", "1", "--sampling-temperature", "0.6",
            "--out", str(out), "--report", str(report), "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["runs_written"] == 6 and summary["report"] == str(report)
    text = report.read_text()
    assert "--task arithmetic --verifier rules" in text and "--sampling-temperature 0.6" in text
    assert "| width | bon | rebase | ets |" in text and "REBASE/ETS" in text and "Machine load" in text
    assert "resumed" not in text.splitlines()[2] and " min;" in text.splitlines()[2]
    assert not (tmp_path / "search.sqlite-wal").exists()  # the store stands on its own
    records = load_sweep_records(out)
    assert len(records) == 6 and {r["policy"] for r in records} == {"bon", "rebase", "ets"}
    assert "tree" in records[0]  # the page draws example trees from the store
    table = tradeoff_table(records)
    assert list(table.columns) == ["policy", "width", "accuracy", "kv_mean", "questions", "kv_search_mean"]
    assert len(table) == 6
    # Rerun: nothing recomputed, the report says the time is not this run's.
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["runs_already_done"] == 6
    assert "resumed" in report.read_text().splitlines()[2]


def test_loader_errors_are_one_line(tmp_path):
    from ragscale.search.results import load_sweep_records

    assert load_sweep_records(tmp_path / "missing.sqlite") == []  # the page then says how to make one
    bad = tmp_path / "bad.sqlite"
    bad.write_text("not a database")
    with pytest.raises(UserError, match="not a ragscale results store"):
        load_sweep_records(bad)


def test_sweep_note_states_the_rows():
    from ragscale.search.sweep_report import sweep_note

    rows = [_row("rebase", 1, "a", False, 100), _row("rebase", 8, "a", True, 300),
            _row("ets", 1, "a", False, 100), _row("ets", 8, "a", True, 200)]
    note = sweep_note(rows)
    assert "rebase 0.000 at width 1 -> 1.000 at 8" in note and "ets 0.000 at width 1 -> 1.000 at 8" in note
    assert "matched accuracy 1.000" in note and "1.8x" in note
    assert "retained KV (with the prompt) 1.50" in note and "search KV (without the prompt) 1.67" in note
    assert sweep_note([]) == "No search records."


def test_cli_rejects_mismatched_task_and_verifier(monkeypatch, capsys):
    from ragscale.cli import main
    from ragscale.search import cli as search_cli

    monkeypatch.setattr(search_cli, "engine_from_args", lambda args, **kw: ScriptedEngine(_reply()))
    assert main(["search", "--task", "qa", "--verifier", "rules", "--dataset", "demo"]) == 2
    assert "--task arithmetic" in capsys.readouterr().err
    assert main(["search", "--task", "arithmetic", "--verifier", "rules", "--dataset", "hotpotqa"]) == 2
    assert "--dataset arithmetic" in capsys.readouterr().err


# --- held-out seeds and the graded checker -----------------------------------------------------

def test_held_out_seeds_are_named_datasets_of_the_harder_task():
    from ragscale.search.builder import load_questions
    from ragscale.search.tasks.arithmetic import HARD_OPERATIONS

    bundled = load_questions("arithmetic", "arithmetic")
    assert bundled.name == "arithmetic" and bundled.questions[0].hops == DEFAULT_OPERATIONS
    held = load_questions("arithmetic", "arithmetic-s7")
    assert held.name == "arithmetic-s7" and {q.hops for q in held.questions} == {HARD_OPERATIONS}
    assert [q.question for q in held.questions] == [q.question for q in arithmetic_dataset(48, 7, 3).questions]
    assert {q.question for q in held.questions}.isdisjoint(q.question for q in load_questions(
        "arithmetic", "arithmetic-s8").questions)
    assert load_questions("arithmetic", "arithmetic-s7-o2").name == "arithmetic-s7-o2"
    with pytest.raises(UserError, match="--dataset arithmetic"):
        load_questions("arithmetic", "arithmetic-seven")
    from ragscale.explorer.library import task_of

    assert task_of("arithmetic-s7") == "arithmetic" and task_of("arithmetic") == "arithmetic"  # explorer-precompute


def test_graded_checker_is_pass_fail_times_the_step_confidence():
    from ragscale.search.rule_verifier import ArithmeticRulesGraded

    sure, unsure = _traj(["7 + 5 = 12"]), _traj(["7 + 5 = 12"])
    sure.confidence, unsure.confidence = 0.9, 0.4
    wrong = _traj(["7 + 5 = 13"])
    wrong.confidence = 0.99
    assert ArithmeticRulesGraded().score([sure, unsure, wrong]) == [0.9, 0.4, 0.0]
    with pytest.raises(UserError, match="log-probabilities"):
        ArithmeticRulesGraded().score([_traj(["7 + 5 = 12"])])


def test_search_records_the_step_confidence_and_grades_with_it():
    from ragscale.search.rule_verifier import ArithmeticRulesGraded

    question = type(arithmetic_dataset(1).questions[0])(qid="q", question=PROBLEM, answers=["32"],
                                                        dataset="arithmetic", hops=3)
    config = load_recipe("rebase", width=4, max_depth=5, step_max_tokens=16, seed=0)
    result = run_search(ScriptedEngine(_reply()), ArithmeticTask(), question, config, ArithmeticRulesGraded(), None)
    steps = [n for n in result.tree if n.parent is not None]
    assert all(n.meta["confidence"] == pytest.approx(0.6065, abs=1e-4) for n in steps)  # exp(-0.5) per token
    assert {round(n.score, 4) for n in steps} == {0.0, 0.6065} and result.correct
