"""Authentication: client credentials, JWT issue and verification, scopes."""
