"""Pure tracing domain: visits, events, exposure rules and graphs. No I/O imports."""
