"""Fuzzing sockftp's server with atheris: see docs/FUZZING.md."""
