"""The exporter a Prometheus scrapes: HTTP and rendering, the web config
(TLS, basic auth), the capability set it keeps, and the local accounting store."""
