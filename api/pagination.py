"""Page-number pagination whose `page` and `page_size` are checked as the schema documents them."""

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination

from api.filters import single_query_value


def _positive_int(request, name: str) -> int | None:
    raw = single_query_value(request, name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError({name: ["Enter a whole number."]}) from None
    if value < 1:
        raise ValidationError({name: ["Enter a number of at least 1."]})
    return value


class Pagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def get_page_number(self, request, paginator):
        return _positive_int(request, self.page_query_param) or 1

    def get_page_size(self, request):
        requested = _positive_int(request, self.page_size_query_param)
        return self.page_size if requested is None else min(requested, self.max_page_size)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["schema"] = {"type": "integer", "minimum": 1}
            if parameter["name"] == self.page_size_query_param:
                parameter["description"] = (
                    f"Results per page ({self.page_size} by default; at most {self.max_page_size}, more is capped)."
                )
        return parameters
