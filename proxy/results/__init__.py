"""Results for analysts: ``kairos results`` in a terminal, JSON and CSV exports, and the
admin pages with charts drawn as SVG on the server.

Layout: ``summary`` assembles one report per experiment (pure, from counts read by
``proxy.store.experiment_counts``); ``text``, ``export``, ``page``, ``charts`` and ``figures``
render it (pure); ``service`` reads the store; ``endpoints`` (ASGI) and ``cli`` are the two
doors; ``auth`` guards the doors with ``admin.token``; ``definitions`` reads the experiments
from the rules folder until the rules loader does; ``demo`` writes simulated history.

Nothing is imported here: ``kairos --help`` must not pay for numpy and scipy. Import from
the modules (``proxy.results.endpoints.ResultsEndpoints``, ``proxy.results.cli``, ...).
"""
