"""Pure domain of people: ID numbers, CCCD QR payloads, residents, card rules.

Nothing here does I/O beyond reading the reference data shipped with the package.
"""
