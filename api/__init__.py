"""FastAPI: routes by domain, one error handler, the live dashboard."""
