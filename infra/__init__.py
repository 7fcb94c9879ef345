"""The settlement platform: stack config model, composition of the subsystems, entry point, offline tools."""
