"""Webmail under /mail/."""

from django.urls import path

from . import views

app_name = "webmail"

urlpatterns = [
    path("", views.sign_in, name="sign_in"),
    path("sign-out/", views.sign_out, name="sign_out"),
    path("folder/<slug:slug>/", views.folder, name="folder"),
    path("m/<int:pk>/", views.read, name="read"),
    path("m/<int:pk>/body/", views.body, name="body"),
    path("inline/<str:token>/", views.inline, name="inline"),
    path("m/<int:pk>/part/<int:number>/", views.attachment, name="attachment"),
    path("m/<int:pk>/source/", views.source, name="source"),
    path("m/<int:pk>/delete/", views.delete, name="delete"),
    path("m/<int:pk>/mark/", views.mark, name="mark"),
    path("compose/", views.compose, name="compose"),
    path("password/", views.password, name="password"),
]
