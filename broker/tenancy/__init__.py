"""The tenancy wing: tenants and their keys, rate limits, budgets and the spend meter, PII
redaction and restore.
"""
