"""liquidgen: small image generators, trained and sampled on one GPU."""
__version__ = "0.1.0"
