"""Proactive notifications: live transcripts -> app webhooks -> filled prompt -> LLM -> push."""
