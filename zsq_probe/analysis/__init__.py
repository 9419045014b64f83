"""Pure functions over probe tables: row selection, summaries and verdicts (`probe_tables`) and epoch lists
as users write them (`epochs`)."""
