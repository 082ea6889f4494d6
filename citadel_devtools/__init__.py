"""Development tools, not part of the product: the ``citadel-indexer demo`` stack, a throwaway PostgreSQL, the anvil
launcher, the Tron simulator and the demo's EVM activity.

They live in the checkout, next to what they use (``node_modules``, ``contracts/artifacts``, ``demo/seed.sql``), and
are importable from an editable install of it (``make install``; their dependencies are the ``demo`` extra). A wheel
of citadel-indexer holds ``indexer`` and ``chains`` only.
"""
