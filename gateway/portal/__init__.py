"""The tenant web portal (/portal/): API keys, usage, tier limits and service accounts of the
tenants a signed-in user belongs to. Views call gateway.services for every write."""
