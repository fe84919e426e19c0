"""People: console accounts, second factors, sessions, and the Pro Santé Connect login."""
