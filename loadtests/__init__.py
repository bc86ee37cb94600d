"""Locust load tests: `make load` (`python -m loadtests --help`)."""
