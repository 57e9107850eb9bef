"""The built-in methods, one file each (the contract: :mod:`flatmin.method`). Every module here whose
name does not start with ``_`` is imported by the registry on first use."""
