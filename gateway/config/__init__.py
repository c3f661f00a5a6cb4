"""Settings: the YAML file (LiteLLM's keys) loaded, checked and frozen at start-up."""
