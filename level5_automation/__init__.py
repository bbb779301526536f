"""level5_automation."""
