"""rest_bridge."""
