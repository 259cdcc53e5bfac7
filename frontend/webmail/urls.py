"""Webmail under /mail/."""

from django.urls import path

from . import folder_views, views

app_name = "webmail"

urlpatterns = [
    path("", views.sign_in, name="sign_in"),
    path("sign-out/", views.sign_out, name="sign_out"),
    # A folder's IMAP name (no "/" can be in one); "inbox" is INBOX.
    path("folder/<str:slug>/", views.folder, name="folder"),
    path("folders/", folder_views.manage_folders, name="folders"),
    path("folders/create/", folder_views.create_folder, name="create_folder"),
    path("folders/rename/", folder_views.rename_folder, name="rename_folder"),
    path("folders/delete/", folder_views.delete_folder, name="delete_folder"),
    path("messages/", folder_views.act, name="act"),
    path("undo/", folder_views.undo, name="undo"),
    path("trash/empty/", folder_views.empty_trash, name="empty_trash"),
    path("m/<int:pk>/", views.read, name="read"),
    path("m/<int:pk>/body/", views.body, name="body"),
    path("inline/<str:token>/", views.inline, name="inline"),
    path("m/<int:pk>/part/<int:number>/", views.attachment, name="attachment"),
    path("m/<int:pk>/source/", views.source, name="source"),
    path("m/<int:pk>/delete/", folder_views.delete, name="delete"),
    path("m/<int:pk>/mark/", folder_views.mark, name="mark"),
    path("compose/", views.compose, name="compose"),
    path("password/", views.password, name="password"),
    path("time-zone/", views.time_zone, name="time_zone"),
]
