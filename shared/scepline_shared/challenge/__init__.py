"""challenge."""
