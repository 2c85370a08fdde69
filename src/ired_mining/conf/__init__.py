"""Hydra configs of ired-train (a package so the installed script finds them)."""
