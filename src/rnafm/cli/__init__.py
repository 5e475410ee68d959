"""Command-line interface: thin layers over the public Python API."""
