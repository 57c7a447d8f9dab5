"""Results: runs.parquet and leaderboard.parquet, the plots and the HTML report."""
