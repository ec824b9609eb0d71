"""``tradebaas doctor``: the preflight a user runs before going live (issue 12).

``checks`` holds the verdicts (pure: facts in, a ``Check`` out), ``exchange`` asks the exchange through the
engine's own Deribit client and order manager, ``local`` reads this machine's engine and configuration; the CLI
front end is ``tradebaas/commands/doctor.py``.
"""
