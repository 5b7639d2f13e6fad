"""Plumbing shared by the gRPC services: auth, status details, serving, logging, settings."""
