"""hoopctl: least privilege where automation erodes it."""

__version__ = "0.1.0"
