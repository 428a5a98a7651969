"""Built-in backends, one package per cloud."""
