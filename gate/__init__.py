"""The checkpoint device side: QR decoding, gate checks and simulated devices.

A device talks HTTP to the API only (never Kafka, Redis or ClickHouse).
"""
