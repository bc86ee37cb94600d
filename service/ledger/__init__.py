"""The ledger domain: business rules over accounts and money movement (no HTTP here)."""
