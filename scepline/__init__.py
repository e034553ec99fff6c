"""scepline."""
