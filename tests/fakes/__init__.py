"""Local stand-ins for the push services (FCM, APNs, Web Push) that speak their real protocols.

Each fake is a small ASGI app: it checks authentication the way the real service does (a signed
OAuth2 assertion, an ES256 provider token, a VAPID signature), validates requests, answers with
the service's own error formats, and records what it received. Tests script its answers per token.
"""
