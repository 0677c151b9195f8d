"""The REST API under /api/v1/ (Django REST Framework): tokens, reads, and the pages' flows."""
