"""The controls of ``kvmprep check``: a catalog (data) and pure functions that judge facts."""
