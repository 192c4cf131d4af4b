"""Real backends for tests: each module starts its own instance on a free 127.0.0.1 port and stops it by PID."""
