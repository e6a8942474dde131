"""Live events: the in-process bus and the transports that carry its events between processes."""
