"""The `wms` command line; one module per command group."""
