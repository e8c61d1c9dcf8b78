"""Test doubles for OpenNebula (see oned_double.py). Test code only: never shipped in the wheel."""
