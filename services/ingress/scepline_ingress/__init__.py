"""scepline_ingress."""
