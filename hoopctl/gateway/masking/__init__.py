"""Result masking for the gateway: rules by column name, by resource.schema.table.column and by
content (emails, card numbers, IBANs, phone numbers, national ids, credentials), applied to the
values of DataRows, and to bind parameters for the recording.

    rules = MaskingRules.from_config(cfg["masking"], binary="null", hash_key=key)
    masker = rules.plan(resource, fields, table_name)     # once per RowDescription; None: forward as is
    if masker is not None and masker.refuse: ...          # a binary column is covered: refuse
    values, count = masker.mask(values)                   # per DataRow

The config schema is documented, with a commented example, in hoopctl/gateway/masking_example.yaml.
"""

from hoopctl.gateway.masking.plan import Field, MaskingRules, RowMasker

__all__ = ["Field", "MaskingRules", "RowMasker"]
