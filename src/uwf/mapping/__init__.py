"""Pure transforms: expressions, templates, value maps, project functions and type coercion.

DESIGN decision 5: JMESPath only.
"""

from uwf.mapping._coerce import COERCE_TYPES, coerce
from uwf.mapping._expressions import (
    LIMITS,
    MAX_EXPRESSION_LENGTH,
    CompiledValue,
    Expression,
    Limits,
    ValueMap,
    compile_expression,
    compile_value,
    document_fits,
    is_truthy,
    referenced_value_maps,
)
from uwf.mapping._functions import e164, format_date, frozen_now, iso_country, now, parse_date

__all__ = [
    "COERCE_TYPES",
    "LIMITS",
    "MAX_EXPRESSION_LENGTH",
    "CompiledValue",
    "Expression",
    "Limits",
    "ValueMap",
    "coerce",
    "compile_expression",
    "compile_value",
    "document_fits",
    "e164",
    "format_date",
    "frozen_now",
    "is_truthy",
    "iso_country",
    "now",
    "parse_date",
    "referenced_value_maps",
]
