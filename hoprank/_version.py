"""The package version, in a module of its own so that subpackages can read it without
importing the package root (which sits above every subpackage)."""

__version__ = "0.1.0"
