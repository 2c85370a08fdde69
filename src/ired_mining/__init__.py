"""ired-mining: IRED energy-diffusion reasoning on matrix inversion, with pluggable negative mining."""

__version__ = "0.1.0"
