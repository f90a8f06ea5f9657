"""Hydra entry points: thin layers that read a config, call the library and save results.

Run each as `modeconn <app> ...` (the console script, `modeconn.apps.cli`) or
`python -m modeconn.apps.<app> ...`; the configs are the package modeconn.conf (conf/).
"""
