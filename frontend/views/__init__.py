"""Views of the console: parse the request, call a service or a query, render."""
