"""The polyglot shop services (images/frontend, catalogue, orders, app), built and run without Docker."""
