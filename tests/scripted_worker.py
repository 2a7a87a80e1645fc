"""A model-free SGLang-protocol worker for router tests: ``python -m tests.scripted_worker``.

Serves the ScriptedEngine (bytes as tokens) with the replies of the sweep and search tests on a
free loopback port, and prints ``serving ... on http://HOST:PORT`` as ``ragscale serve embedded``
does, so ``LocalCluster`` can start it in place of a model-loading worker.
"""

from __future__ import annotations

import argparse
import random
import sys

from tests.fakes import ScriptedEngine


class SeededScriptedEngine(ScriptedEngine):
    """Honours SGLang's per-request ``sampling_seed`` (as the embedded engine's generate_seeded does)."""

    def generate_seeded(self, prompt_ids, params, seeds):
        out = []
        for ids, seed in zip(prompt_ids, seeds):
            original = self._reply
            rng = random.Random(seed)
            self._reply = lambda prompt, p, i, _rng, f=original, r=rng: f(prompt, p, i, r)
            try:
                out += self.generate([ids], params)
            finally:
                self._reply = original
        return out


def reply(prompt, params, i, rng):
    """The sweep's reader for self-ask prompts, the search tests' replies for tree-search prompts."""
    from tests.test_search_runner import qa_reply
    from tests.test_sweep import reader

    try:
        if prompt.endswith(("Yes", "No")):  # the judge's prompts are only scored (max_new_tokens 0)
            raise LookupError
        if "builder of the Eiffel Tower" in prompt:
            return qa_reply(prompt, params, i, rng)
        if "Where was" in prompt:
            return reader(prompt, params, i, rng)
        raise LookupError
    except (LookupError, AssertionError):
        return f"answer {rng.randrange(100)} to {prompt[-12:]}"


def logprob(prompt, continuation):
    from tests.test_search_runner import judge_logprob

    return judge_logprob(prompt, continuation)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds per generate call (to kill mid-sweep)")
    parser.add_argument("--reward", action="store_true", help="a reward model: /classify with two logits")
    args = parser.parse_args()
    from ragscale.engines.server import make_server

    class Engine(SeededScriptedEngine):
        def generate(self, prompts, params):
            if args.delay:
                import time

                time.sleep(args.delay)
            return super().generate(prompts, params)

        if args.reward:
            def classify(self, texts):  # "good" class logit: the number ending the text
                return [[0.0, float(t.rsplit(" ", 1)[-1])] for t in texts]

    server = make_server(Engine(reply, logprob=logprob), "127.0.0.1", args.port)
    print(f"serving scripted-bytes on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
