"""Local development stack: embedded defaults, generated dev secrets, one command (SPEC §8)."""
