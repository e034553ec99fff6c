"""scepline_notifier."""
