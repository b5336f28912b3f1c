"""HTTP edge: typed schemas, thin routers, dependencies for settings, sessions and admin auth."""
