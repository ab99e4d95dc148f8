"""The ``dancu`` command: the composition root. Nothing imports it."""
