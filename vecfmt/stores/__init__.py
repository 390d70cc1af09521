"""Store plugins: one module per store, found by URI scheme (see ``base.py``)."""
