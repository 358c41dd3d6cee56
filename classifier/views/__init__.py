"""Web pages. One module per area: classify, runs, versions (models), datasets."""
