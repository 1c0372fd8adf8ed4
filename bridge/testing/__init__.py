"""Support for tests and the demo: synthetic studies with planted identities."""
