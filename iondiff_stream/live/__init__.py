"""Live hop counting on a growing frame store (the watcher's side: no work in the simulation)."""
