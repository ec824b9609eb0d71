"""The name the engine probes for services (``tradebaas.engine.app.SERVICE_MODULES``); the service lives in
``tradebaas.reports.service``. Keeping this alias means the engine starts the report scheduler, the reports RPC
methods and the notifier without a line of its own."""

from tradebaas.reports.service import ReportService, create_service

__all__ = ["ReportService", "create_service"]
