"""scepline_shared."""
