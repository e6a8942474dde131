"""The platform's logic as plain async functions over a connection; the API and CLI call these."""
