"""Input fields that take exactly the JSON types the schema documents.

DRF coerces: a CharField takes 25 and stores "25", an IntegerField takes "25" or 25.0, a BooleanField
takes "yes" or 1, a primary key takes "5". The schema says `string`, `integer`, `boolean`, and schemathesis
rightly calls those requests invalid; these fields refuse them, so the schema and the validators agree.
"""

from __future__ import annotations

from rest_framework import serializers


class CharField(serializers.CharField):
    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class IntegerField(serializers.IntegerField):
    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class BooleanField(serializers.BooleanField):
    default_error_messages = {"invalid": "Must be true or false."}

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


def only_integers(field: serializers.Field, data) -> None:
    """Refuse a primary key that is not a JSON integer (DRF looks "5" and 5.0 up too)."""
    if isinstance(data, bool) or not isinstance(data, int):
        field.fail("incorrect_type", data_type=type(data).__name__)


class PrimaryKeyRelatedField(serializers.PrimaryKeyRelatedField):
    def to_internal_value(self, data):
        only_integers(self, data)
        return super().to_internal_value(data)


# For ModelSerializers: the model fields the settings serializers take, mapped to the strict fields above.
STRICT_FIELD_MAPPING = {
    model_field: {
        serializers.CharField: CharField,
        serializers.IntegerField: IntegerField,
        serializers.BooleanField: BooleanField,
    }.get(field_class, field_class)
    for model_field, field_class in serializers.ModelSerializer.serializer_field_mapping.items()
}
