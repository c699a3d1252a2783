"""Records, atomic storage, tables and the sweep report."""
