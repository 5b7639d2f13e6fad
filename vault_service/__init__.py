"""vault_service."""
