"""Devices: profiles (devices/*.yaml) and the transports that reach them (local, ssh, adb)."""
