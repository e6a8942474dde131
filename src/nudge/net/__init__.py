"""Outbound network calls to addresses that someone other than the operator chose."""
