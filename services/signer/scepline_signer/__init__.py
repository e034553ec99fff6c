"""scepline_signer."""
