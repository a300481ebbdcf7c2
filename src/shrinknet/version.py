"""The package version, in one place (pyproject.toml reads it; exports and model files record it)."""

__version__ = "0.3.0"
