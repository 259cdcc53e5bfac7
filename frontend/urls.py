"""The browser console and webmail."""

urlpatterns: list = []
