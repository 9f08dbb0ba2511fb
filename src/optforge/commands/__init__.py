"""Handlers of the ``optforge`` commands, one module per group."""
