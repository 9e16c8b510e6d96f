"""Pure transforms: expressions, templates and value maps (DESIGN decision 5: JMESPath only)."""

from uwf.mapping._expressions import (
    MAX_EXPRESSION_LENGTH,
    CompiledValue,
    Expression,
    ValueMap,
    compile_expression,
    compile_value,
    is_truthy,
    referenced_value_maps,
)

__all__ = [
    "MAX_EXPRESSION_LENGTH",
    "CompiledValue",
    "Expression",
    "ValueMap",
    "compile_expression",
    "compile_value",
    "is_truthy",
    "referenced_value_maps",
]
