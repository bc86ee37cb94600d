"""HTTP resources: decode and authorize, call ledger/, encode the answer."""
