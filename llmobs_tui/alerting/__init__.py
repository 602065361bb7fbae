"""SLOs, burn-rate alerts and cost guards, evaluated from the store's rollups. No Textual: the
`check` command and the TUI both use it."""
