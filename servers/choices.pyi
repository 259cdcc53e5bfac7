# How mypy sees django.db.models.TextChoices without django-stubs: a str enum with a label, whose
# class has choices and values. Without this, `RUNNING = "running", "Running"` reads as a tuple.
import enum

class _ChoicesType(enum.EnumMeta):
    @property
    def choices(cls) -> list[tuple[str, str]]: ...
    @property
    def values(cls) -> list[str]: ...
    @property
    def labels(cls) -> list[str]: ...

class TextChoices(enum.StrEnum, metaclass=_ChoicesType):
    @property
    def value(self) -> str: ...
    @property
    def label(self) -> str: ...
