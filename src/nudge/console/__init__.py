"""The web console: a live notification feed, a conversation simulator and the trace view.

The pages are plain HTML, CSS and JavaScript in ``static/`` (no build step), served by
``nudge.api.console``. They call the public API with the token given at login, and the few calls
``nudge.api.console`` adds: who a token belongs to, the list of users (admin), and what the
platform knows of a user (facts, with the app that imported each, and latest conversations).
"""
