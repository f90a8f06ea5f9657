"""The package version, below every layer: result sidecars record it (`modeconn.io.store`)."""

__version__ = "0.1.0"
