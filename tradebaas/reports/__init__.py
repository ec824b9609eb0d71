"""Scheduled papermill reports and notifications, run by the engine (docs/reports.md).

``config`` reads tradebaas.toml, ``schedule`` is the pure cron maths, ``runner`` executes one report in a
subprocess and records it, ``service`` is the engine service (scheduler, ``reports.*`` and ``journal.events`` RPC,
notifier wiring; ``scheduler`` is the name the engine probes), ``notify`` sends Telegram/webhook messages, ``cli``
is ``tradebaas report``. Nothing is imported here so that ``import tradebaas.reports.x`` stays cheap.
"""
