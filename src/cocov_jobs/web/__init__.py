"""HTTP: GitHub webhooks, coverage uploads, service API, probes, metrics, dashboard."""
