"""The contest submission: its files, their checks, the self-check picture."""
