"""HTTP: probes now; webhooks, coverage uploads, service API, metrics and dashboard later."""
