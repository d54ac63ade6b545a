"""pocketnn's inference engine: load a .pnn file and run it."""
