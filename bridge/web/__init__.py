"""The HTTP surface: health, metrics, the API."""
