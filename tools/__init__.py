"""Developer tooling: migrations, the embedded local stack, the dev server. Not deployed."""
