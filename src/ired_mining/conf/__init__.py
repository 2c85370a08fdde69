"""Hydra configs of ired-train (a package so the installed script finds them).

Importing it registers the schemas the yaml files extend (ired_mining.schema), so that every way of
composing these configs (ired-train, Hydra's compose API in tests and scripts/bench.py) finds them.
"""

import ired_mining.schema  # noqa: F401  (registers the Structured Configs in Hydra's ConfigStore)
