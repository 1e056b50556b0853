"""The hot tier: an ANN index over the table's recent days, kept in step with its snapshots, and its query service."""
