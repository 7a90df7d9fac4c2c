"""The one package every function imports: settings, wire models, errors, database access."""
