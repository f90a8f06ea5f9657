"""The shipped Hydra configs: conf/ installed as the package modeconn.conf (see pyproject)."""
