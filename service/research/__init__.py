"""Research apart from the product path: the Share experiments behind ``dreamfix experiment``.

The daemon never imports this package (``tests/test_research_isolation.py`` pins it). One module per stage
(``strategies``, ``heatmap``, ``sequential``, ``subspace``, ``sweep``); ``experiment`` holds the folder, the
config and the ``seeds`` stage they share; ``data``, ``scoring``, ``variants``, ``metrics``, ``geometry``,
``plots`` and ``report`` are what the stages score, compare, measure, draw and print. Importing the package
itself is cheap (no torch), so the CLI can read :data:`STAGES` for ``--help``.
"""

#: The stages of an experiment, in the order ``dreamfix experiment run all`` runs them.
STAGES = ("seeds", "strategies", "heatmap", "sequential", "subspace", "sweep")
