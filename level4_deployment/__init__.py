"""level4_deployment."""
