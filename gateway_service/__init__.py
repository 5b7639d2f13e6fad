"""gateway_service."""
