"""scepline_validator."""
