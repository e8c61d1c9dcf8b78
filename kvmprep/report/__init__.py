"""Renderers of ``kvmprep check`` reports: ``table`` (terminal) and ``json`` (machine)."""
