"""Bad-input catalogue, tenant isolation and API fuzzing against a served app."""
