"""The calculator's explanations, kept beside the code they describe (Markdown; no Streamlit).

Each sentence is checked against the model here: the bounds in ``optimizer``, the per-call sizes in
``context_length``, the comparison in ``fidelity``. Numbers that depend on the data are not written
here; ``fidelity.fidelity_findings`` computes them.
"""

HOW_COMPUTED = (
    "- **Effective length** counts input tokens over every call for one question (Yue et al. 2025). DRAG puts "
    "m demonstrations, each with its own k documents, before the test documents. IterDRAG makes two calls per "
    "iteration and one to answer, re-sending the growing prompt; each sub-query's k documents are appended.\n"
    "- **Bounds, as in the paper**: the grid is the paper's range, k ≤ 1000, m ≤ 256, n ≤ 5; the budget bounds "
    "the sum over calls; the model's context window bounds each call (prompt + output). The paper runs Gemini "
    "1.5 Flash 'with context length window up to 1M tokens' and reports DRAG (one call) only up to 1M, IterDRAG "
    "(2n + 1 calls that each fit) up to 5M; RAG stops at 128k because k ≤ 1000 documents cannot fill more.\n"
    "- **Prediction**: σ⁻¹(P) = (a + b·i)ᵀ log(θ + 0.01) + c with the paper's fitted sigmoid; P is a z-score "
    "mapped back to a raw score with the selected dataset's Table 1 mean and spread (an approximation).\n"
    "- **Optimiser**: a dense grid per strategy; ties go to the cheaper configuration; P* never decreases as the "
    "budget grows. IterDRAG with n = 1 predicts exactly what DRAG with the same k, m predicts at about three "
    "times the tokens, so *auto* never picks it; when it is the best IterDRAG, the page says so (the Explorer uses "
    "the same pick). When the context window, not the budget, stops the pick, the page says so too.\n"
    "- **Cost**: every model call is billed on its own prompt length at the price sheet's tier for it (Gemini 1.5 "
    "Flash: prompts over 128k tokens pay twice the rates), cached input at the tier's cached rate. *The last point* "
    "is this pick's monthly cost less that of the cheapest configuration predicted at most one point lower; "
    "*diminishing returns* are flagged when one within two points costs a fifth or less."
)

FIDELITY_METHOD = (
    "The paper's own coefficients (Table 8, 1M window) against its Table 1, {metric}: for each dataset and "
    "budget, the model's best configuration (circle, coloured by strategy) and the best score Table 1 reports "
    "within that budget (diamond, coloured by the winning strategy; a method the table stops reporting keeps "
    "its last score). Nothing is tuned to the table. Same numbers: `ragscale bench fidelity`."
)

WHY_DISAGREE = (
    "**Why they disagree**: the model has no term for the strategy. IterDRAG is credited only through a_n·log n, "
    "while each iteration re-sends the whole prompt twice, so up to 1M the model spends the budget on DRAG's k "
    "and m; Table 1 has IterDRAG ahead in most cells from 128k on (multi-hop questions gain from "
    "decomposition, which θ = (k, m, n) cannot express). At 5M the model picks IterDRAG only because of the 1M window: one DRAG call "
    "cannot hold more. Predicted scores are mapped back from z-scores with Table 1's own mean and spread (the "
    "paper does not publish its scale), so the gap in points is approximate."
)

PAPER_PROFILE_NOTE = (
    "a, b, c from Yue et al. 2025 Table 8; context window 1M tokens per call (Gemini 1.5 Flash as run in the "
    "paper). i_doc/i_shot and the z-score scale are not published: defaults are estimated from its Table 1 "
    "(approximation)."
)

PRICES_NOTE = ("Price sheets are data (data/prices/*.yaml; your own in the user cache's prices folder): provider, "
               "model, date, source and tiers by prompt length. Edit the tiers below to try your own rates.")

TOKEN_SIZE_LABELS = {"doc": "document", "question": "question", "answer": "answer", "subquery": "sub-query",
                     "intermediate": "intermediate answer", "instruction": "instruction",
                     "demo_steps": "steps per IterDRAG demonstration"}
