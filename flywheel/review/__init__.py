"""Review queue API and dashboard."""
