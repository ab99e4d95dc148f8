"""Faust app: topics, event decoding and thin agents (decode, call domain, write, emit)."""
