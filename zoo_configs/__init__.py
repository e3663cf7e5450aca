"""The model, recipe and weight configurations (JSON). Installed as ``dynzoo.zoo_configs``; read them with
:func:`dynzoo.config.load_config`."""
