"""Settings: the YAML file (LiteLLM's keys) loaded, every value checked, and frozen at start-up.

settings.py loads the file into Settings; sections.py holds its typed, frozen sections (general,
router, litellm with cache and callbacks); parse.py the one parser of each value kind; callbacks.py
the callback sinks' settings. This package imports nothing from the gateway but gateway.errors, so
any module may read its sections; ConfigError lives in gateway/errors.py.
"""
