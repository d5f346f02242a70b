"""The rules an authenticated request must pass (README "Rules"): the effective policy of each
user (`policy`), the endpoint allow-list and the canonical-path check (`paths`), the model
allow-list and where each API puts its model (`models`). Pure: imports nothing of llamakey, so
the configuration can validate patterns with it."""
