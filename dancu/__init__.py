"""dancu: real-time epidemic risk tracing on a population registry."""

__version__ = "0.1.0"
