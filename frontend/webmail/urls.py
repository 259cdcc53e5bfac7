"""Webmail under /mail/."""

urlpatterns: list = []
