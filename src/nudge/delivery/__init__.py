"""Delivery: the durable queue, the worker that drains it, and the providers it sends through."""
