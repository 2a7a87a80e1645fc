"""The Explorer: one view where budget, k, m, n and beam width meet the tree and the curves.

``state`` is the view's whole configuration (URL round trip, validation); ``screen`` turns a
state into everything the page shows (``explorer(state) -> Screen``); ``library`` stores trees
by key and finds the nearest; ``precompute`` fills the bundled library over the slider grid;
``live`` runs a search for the exact configuration, with the engine warmed in the background.
"""
