"""The Explorer: one view where budget, k, m, n and beam width meet the tree and the curves.

``state`` is the view's whole configuration (URL round trip, validation); ``view`` turns a
state into what the page shows by composing the allocation model, the stored runs and the
search trees; ``precompute`` ships trees for the default question so the page opens instantly.
"""
