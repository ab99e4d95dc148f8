"""Adapters: settings, Kafka/Redis/ClickHouse clients, service launchers, migrations."""
