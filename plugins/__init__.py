"""Built-in modules. Each folder is one plugin, registered by entry point like any third-party plugin."""
