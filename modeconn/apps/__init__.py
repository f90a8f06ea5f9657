"""Hydra entry points: thin layers that read a config, call the library and save results."""
