"""The HTTP shell: middleware, dependencies, graceful serving, the API docs page."""
