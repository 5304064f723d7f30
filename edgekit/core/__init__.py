"""Shared building blocks every layer may use: errors, files, quiet output capture, the terminal UI."""
